"""Access: who is calling (authentication), may they (authorization), and the record of it.

Knows nothing about upstream wire formats. The transport room calls into it for every RPC.
"""
