"""Generated latchkey.v1 stubs (produced by `make proto`; never edited by hand)."""
