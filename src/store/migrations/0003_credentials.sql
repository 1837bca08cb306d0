-- Credential facts per baselined file (certificates and keys: subject, issuer, serial,
-- validity, SPKI SHA-256, algorithm and size, encryption; never key material), as JSON.
-- `blake3` is the content the facts were read from: a row whose hash differs from its
-- entry's describes other content and is ignored.
CREATE TABLE credentials (
    path   BLOB PRIMARY KEY,
    blake3 BLOB NOT NULL,
    kind   TEXT NOT NULL,
    facts  TEXT NOT NULL
);
