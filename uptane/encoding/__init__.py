"""Wire encodings: TUF canonical JSON, Uptane DER (ASN.1) and CBOR for link messages."""
