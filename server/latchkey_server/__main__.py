"""`python -m latchkey_server` is `latchkey-server`."""

from latchkey_server.cli import main

main()
