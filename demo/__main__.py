"""Placeholder until the in-process demo lands: proves the core imports and signs."""

from uptane.keys import PrivateKey

if __name__ == "__main__":
    k = PrivateKey.generate()
    print(f"uptane core ready; generated key {k.keyid[:16]}…")
