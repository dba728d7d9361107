"""Transport: gRPC servicers and the interceptor. The only server room that imports grpc.

Servicers decode a request into domain values, ask the access room, call a broker, and encode
the result. Errors are mapped to gRPC statuses in one place (`errors.py`).
"""
