#!/usr/bin/env python3
"""Build a deterministic, KMS-host-like file tree for benchmarking kmsentry against AIDE.

What it builds (for the default --files 100000):
  * ~100,000 non-directory entries in ~8,000 directories, ~1.3 GiB in total;
  * mostly small text files: PEM certificates and keys (1-4 KiB), YAML/JSON configs,
    CRLs, a content-addressed JSON cache, docs;
  * medium binaries: PKCS#11 providers and other shared objects (50 KiB - 2 MiB);
  * seven large files (64-256 MiB, 1 GiB together) that dominate the byte count, so
    that the benchmark measures both per-file overhead and hashing throughput;
  * relative and absolute symlinks (some absolute ones point outside the tree, as
    /etc/ssl/certs does on Debian), hard links, one ~20-level deep vendor tree per
    5,000 files, varied modes (0600/0640/0644/0755, 0700/0710/0750 directories),
    a few owners/groups (when run as root), user xattrs and POSIX ACLs on some keys.

Everything is a pure function of (--files, --seed): paths, sizes, contents, modes,
owners, xattrs, ACLs and mtimes. Two runs with the same arguments produce identical
trees (compare with `diff -r` plus a `find -printf` listing of metadata). Large files
are written by repeating a per-file seeded 1 MiB block with a per-MiB digest mixed
into its head, so generating 1.3 GiB takes seconds, not minutes.

The corpus root DIR receives etc/, usr/ and opt/ plus a `.corpus.json` describing how
it was made and whether it is currently tampered with; tools under test should scan
only etc/, usr/ and opt/.

Usage:
  make-corpus.py DIR [--files N] [--seed S] [--force]   generate (DIR must be absent
                                                        or empty unless --force)
  make-corpus.py DIR --tamper    apply the deterministic tamper set; print it as TSV
                                 lines "STATUS<TAB>/host/abs/path<TAB>WHAT" where
                                 STATUS is added|removed|changed and WHAT says why
                                 (content, content-stealthy, mode, add, delete, or
                                 dir-side-effect for a parent directory whose mtime
                                 and ctime moved because an entry was added/removed)
  make-corpus.py DIR --restore   undo --tamper (contents, modes, mtimes; inode and
                                 ctime of restored files naturally differ)
  make-corpus.py DIR --status    print the .corpus.json metadata

Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import time

GEN_VERSION = 1
META = ".corpus.json"
MIB = 1 << 20
BASE_EPOCH = 1704067200  # 2024-01-01T00:00:00Z: every mtime is derived from this.
DIR_MTIME_NS = (BASE_EPOCH + 400 * 86400) * 10**9
# Large files at --files 100000, in MiB; scaled linearly with --files (min 1 MiB).
BIG_FILES = [
    ("opt/kms/data/snapshots/keystore-2024-01.snap", 256),
    ("opt/kms/data/snapshots/keystore-2024-02.snap", 256),
    ("opt/kms/releases/3.2.1/kms-agent.img", 192),
    ("usr/lib/x86_64-linux-gnu/pkcs11/libvendor-hsm-fips.so", 128),
    ("etc/kms-client/crl/full-crl-bundle.der", 64),
    ("opt/kms/data/audit/audit-2023.log.zst", 64),
    ("opt/kms/data/audit/audit-2024.log.zst", 64),
]
KMS_UID = 999  # a "kms" service account
KMS_GID = 999
SSL_CERT_GID = 111  # Debian's ssl-cert group
ACL_READER_UID = 1001  # an auditor granted read access to some keys through an ACL
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-east-2", "us-west-2",
           "ap-south-1", "ap-northeast-1", "sa-east-1"]
RELEASES = ["2.9.4", "3.0.0", "3.0.3", "3.1.0", "3.1.2", "3.2.1"]
CURRENT_RELEASE = "3.2.1"
LANGS = ["de", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt_BR", "ru", "sv", "tr",
         "uk", "zh_CN", "zh_TW", "cs", "da", "fi", "hu", "nb"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
         "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
         "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
         "yankee", "zulu", "vault", "hsm", "kek", "dek", "rotate", "wrap", "unwrap",
         "tenant", "region", "shard", "replica", "audit", "policy", "grant"]


def rng_for(seed: int, key: str) -> random.Random:
    """A PRNG that depends only on (seed, key): lets any single file be regenerated."""
    d = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(d, "little"))


class Spec:
    """One regular file of the plan."""

    __slots__ = ("path", "kind", "size", "mode", "uid", "gid", "xattrs", "acl", "big")

    def __init__(self, path, kind, size, mode, uid=0, gid=0, xattrs=(), acl=False,
                 big=False):
        self.path = path
        self.kind = kind
        self.size = size  # target size; exact for binary kinds, approximate for text
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.xattrs = tuple(xattrs)
        self.acl = acl
        self.big = big


class Plan:
    """Every directory, file, symlink and hard link of the corpus, in creation order."""

    def __init__(self, nfiles: int, seed: int):
        self.nfiles = nfiles
        self.seed = seed
        self.rng = random.Random(seed)
        self.scale = nfiles / 100_000
        self.dirs: dict[str, int] = {}  # relpath -> mode
        self.files: list[Spec] = []
        self.by_path: dict[str, Spec] = {}
        self.symlinks: list[tuple[str, str]] = []  # (relpath, target)
        self.hardlinks: list[tuple[str, str]] = []  # (relpath, existing relpath)
        self._build()

    # -- helpers -----------------------------------------------------------------
    def cnt(self, x: float) -> int:
        return max(1, round(x * self.scale))

    def entries(self) -> int:
        return len(self.files) + len(self.symlinks) + len(self.hardlinks)

    def mkdir(self, path: str, mode: int = 0o755) -> str:
        parts = path.split("/")
        for i in range(1, len(parts)):
            self.dirs.setdefault("/".join(parts[:i]), 0o755)
        self.dirs[path] = mode
        return path

    def file(self, path: str, kind: str, size: int, mode: int = 0o644, **kw) -> Spec:
        assert path not in self.by_path, path
        d = path.rsplit("/", 1)[0]
        if d not in self.dirs:
            self.mkdir(d)
        s = Spec(path, kind, size, mode, **kw)
        self.files.append(s)
        self.by_path[path] = s
        return s

    def symlink(self, path: str, target: str) -> None:
        d = path.rsplit("/", 1)[0]
        if d not in self.dirs:
            self.mkdir(d)
        self.symlinks.append((path, target))

    def hardlink(self, path: str, src: str) -> None:
        assert src in self.by_path, src
        d = path.rsplit("/", 1)[0]
        if d not in self.dirs:
            self.mkdir(d)
        self.hardlinks.append((path, src))

    def word(self) -> str:
        return self.rng.choice(WORDS)

    # -- layout ------------------------------------------------------------------
    def _build(self) -> None:
        r = self.rng
        big_mib = {p: max(1, round(m * self.scale)) for p, m in BIG_FILES}

        # /etc/ssl: local CA certs with OpenSSL hash links, Debian-style absolute links
        # into /usr/share/ca-certificates, and a private key directory.
        self.mkdir("etc/ssl/certs")
        self.mkdir("etc/ssl/private", 0o710)
        self.file("etc/ssl/openssl.cnf", "conf", 12_000)
        hashes_seen: set[str] = set()

        def hash_link(target_name: str) -> None:
            h = "%08x" % r.getrandbits(32)
            while h in hashes_seen:
                h = "%08x" % r.getrandbits(32)
            hashes_seen.add(h)
            self.symlink(f"etc/ssl/certs/{h}.0", target_name)  # relative

        for i in range(self.cnt(150)):
            name = f"Mozilla_Root_{i:04d}_{self.word().title()}"
            self.file(f"usr/share/ca-certificates/mozilla/{name}.crt", "cert",
                      r.randint(1200, 2600))
            self.symlink(f"etc/ssl/certs/{name}.pem",
                         f"/usr/share/ca-certificates/mozilla/{name}.crt")  # absolute
            hash_link(f"{name}.pem")
        for i in range(self.cnt(200)):
            name = f"kms-internal-ca-{i:04d}"
            self.file(f"etc/ssl/certs/{name}.pem", "cert", r.randint(1200, 4000))
            hash_link(f"{name}.pem")
        self.file("etc/ssl/certs/ca-certificates.crt", "certbundle", self.cnt(150) * 1900)
        for i in range(self.cnt(40)):
            self.file(f"etc/ssl/private/host-{i:03d}.key", "key", r.randint(1600, 3300),
                      0o640, gid=SSL_CERT_GID)

        # /etc/pki (RHEL-style layout, kept alongside for realism).
        self.mkdir("etc/pki/tls/private", 0o700)
        for i in range(self.cnt(300)):
            self.file(f"etc/pki/tls/certs/svc-{i:04d}.crt", "cert", r.randint(1200, 4000))
        for i in range(self.cnt(60)):
            self.file(f"etc/pki/tls/private/svc-{i:04d}.key", "key", r.randint(1600, 3300),
                      0o600)
        for i in range(self.cnt(40)):
            self.file(f"etc/pki/ca-trust/source/anchors/anchor-{i:03d}.pem", "cert",
                      r.randint(1200, 2600))
        self.file("etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "certbundle",
                  self.cnt(200) * 1900)
        self.file("etc/pki/ca-trust/extracted/openssl/ca-bundle.trust.crt", "certbundle",
                  self.cnt(200) * 2100)
        self.file("etc/pki/ca-trust/extracted/java/cacerts", "bin", self.cnt(200) * 1400)
        self.file("etc/pki/ca-trust/extracted/edk2/cacerts.bin", "bin", self.cnt(200) * 1300)
        self.hardlink("etc/pki/tls/certs/ca-bundle.crt",
                      "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
        self.symlink("etc/pki/tls/cert.pem", "certs/ca-bundle.crt")

        # /etc/kms-client: main config, drop-ins, CRLs, and per-tenant material.
        self.mkdir("etc/kms-client", 0o750)
        self.file("etc/kms-client/kms-client.yaml", "yaml", 4000, 0o640, gid=KMS_GID)
        for i in range(self.cnt(60)):
            self.file(f"etc/kms-client/conf.d/{i:02d}-{self.word()}-{self.word()}.yaml",
                      "yaml", r.randint(300, 3000), 0o640, gid=KMS_GID)
        for i in range(self.cnt(30)):
            self.file(f"etc/kms-client/crl/issuer-{i:03d}.crl", "crl", r.randint(800, 8000))
        self.file(BIG_FILES[4][0], "big", big_mib[BIG_FILES[4][0]] * MIB, big=True)
        tenants = []
        for t in range(self.cnt(1200)):
            region = REGIONS[t % len(REGIONS)]
            base = f"etc/kms-client/tenants/{region}/tn-{t:05d}-{self.word()}"
            tenants.append(base)
            self.mkdir(base, 0o750)
            self.mkdir(f"{base}/keys", 0o700)
            self.file(f"{base}/tenant.yaml", "yaml", r.randint(600, 2500), 0o640,
                      gid=KMS_GID)
            self.file(f"{base}/tenant.json", "json", r.randint(400, 2000), 0o640,
                      gid=KMS_GID)
            for k in range(8):
                self.file(f"{base}/certs/client-cert-{k}.pem", "cert",
                          r.randint(1200, 4000))
            self.file(f"{base}/certs/ca-chain.pem", "certbundle", r.randint(2500, 4000))
            self.symlink(f"{base}/certs/current.pem", "client-cert-7.pem")
            # Every 50th tenant grants an auditor read access through an ACL; every
            # 10th labels its keys with a user xattr.
            acl = t % 50 == 7
            for k in range(8):
                xattrs = ()
                if t % 10 == 3:
                    xattrs = (("user.kms.key-id", f"kid-{t:05d}-{k}".encode()),
                              ("user.kms.rotated", b"2024-%02d-01" % (k + 1)))
                self.file(f"{base}/keys/client-key-{k}.pem", "key", r.randint(1600, 3300),
                          0o640 if acl else 0o600, uid=KMS_UID, gid=KMS_GID,
                          xattrs=xattrs, acl=acl)
            for k in range(4):
                self.file(f"{base}/keys/wrapped-dek-{k}.json", "json", r.randint(300, 900),
                          0o600, uid=KMS_UID, gid=KMS_GID)
            for k in range(6):
                self.file(f"{base}/policies/policy-{k}-{self.word()}.yaml", "yaml",
                          r.randint(300, 2500), 0o644)

        # /usr/lib: PKCS#11 providers, OpenSSL engines/providers, versioned libraries.
        lib = "usr/lib/x86_64-linux-gnu"
        for i in range(self.cnt(20)):
            self.file(f"{lib}/pkcs11/lib{self.word()}-pkcs11-{i:02d}.so", "so",
                      r.randint(200_000, 2_000_000), 0o644)
        self.file(BIG_FILES[3][0], "big", big_mib[BIG_FILES[3][0]] * MIB, 0o644, big=True)
        for i in range(self.cnt(6)):
            self.file(f"{lib}/engines-3/{self.word()}{i}.so", "so",
                      r.randint(50_000, 400_000))
        for i in range(self.cnt(3)):
            self.file(f"{lib}/ossl-modules/{self.word()}{i}.so", "so",
                      r.randint(100_000, 900_000))
        for i in range(self.cnt(150)):
            major = r.randint(0, 9)
            real = f"lib{self.word()}{self.word()}{i}.so.{major}.{r.randint(0, 30)}.{r.randint(0, 9)}"
            self.file(f"{lib}/{real}", "so", r.randint(50_000, 500_000), 0o644)
            self.symlink(f"{lib}/lib{real.split('.so.')[0][3:]}.so.{major}", real)
        self.symlink("usr/lib/ssl/certs", "/etc/ssl/certs")
        self.symlink("usr/lib/ssl/private", "/etc/ssl/private")
        self.symlink("usr/lib/ssl/openssl.cnf", "/etc/ssl/openssl.cnf")
        for i in range(self.cnt(400)):
            pkg = f"{self.word()}-{self.word()}-{i}"
            self.file(f"usr/share/doc/{pkg}/copyright", "text", r.randint(800, 6000))
            self.file(f"usr/share/doc/{pkg}/changelog.Debian.gz", "bin",
                      r.randint(300, 4000))

        # /opt/kms: releases, a "current" symlink, hard-linked launchers, data.
        for v in RELEASES:
            rel = f"opt/kms/releases/{v}"
            for b in ("kms-agent", "kmsctl", "kms-rotate"):
                self.file(f"{rel}/bin/{b}", "elf", r.randint(300_000, 1_500_000), 0o755)
            for i in range(self.cnt(20)):
                self.file(f"{rel}/lib/libkms-{self.word()}-{i}.so", "so",
                          r.randint(20_000, 200_000), 0o755)
            for i in range(self.cnt(40)):
                self.file(f"{rel}/share/schemas/{self.word()}-{i}.schema.json", "json",
                          r.randint(500, 4000))
            for lang in LANGS[: self.cnt(20)]:
                self.file(f"{rel}/share/locale/{lang}/LC_MESSAGES/kms.mo", "bin",
                          r.randint(2000, 30000))
        self.file(BIG_FILES[2][0], "big", big_mib[BIG_FILES[2][0]] * MIB, big=True)
        self.symlink("opt/kms/current", f"releases/{CURRENT_RELEASE}")
        for b in ("kms-agent", "kmsctl", "kms-rotate"):
            self.hardlink(f"opt/kms/bin/{b}", f"opt/kms/releases/{CURRENT_RELEASE}/bin/{b}")
        self.mkdir("opt/kms/data", 0o750)
        for p, _ in (BIG_FILES[0], BIG_FILES[1], BIG_FILES[5], BIG_FILES[6]):
            self.file(p, "big", big_mib[p] * MIB, 0o640, uid=KMS_UID, gid=KMS_GID, big=True)

        # Deep vendored source trees (~20 levels).
        for c in range(self.cnt(20)):
            depth = r.randint(18, 22)
            parts = ["opt/kms/vendor/src/github.com", f"acme-{c:02d}"]
            for d in range(depth - len(parts) - 2):
                parts.append(f"{self.word()}{d}")
                here = "/".join(parts)
                self.file(f"{here}/{self.word()}.go", "text", r.randint(500, 5000))
                self.file(f"{here}/README.md", "text", r.randint(200, 2000))

        # The remainder: a content-addressed cache fanned out over aa/bb/ directories,
        # plus a dedup directory of hard links into it.
        remaining = max(0, self.nfiles - self.entries())
        n_dedup = min(remaining // 2, self.cnt(75)) if remaining > 4 else 0
        n_cache = remaining - n_dedup
        leaves = max(1, n_cache // 30)
        top = min(256, leaves)
        per_top = max(1, -(-leaves // top))
        leaf_dirs = [f"opt/kms/data/cache/{a:02x}/{b:02x}"
                     for a in range(top) for b in range(per_top)][:leaves]
        cache_files = []
        for i in range(n_cache):
            d = leaf_dirs[i % len(leaf_dirs)]
            name = "%016x" % r.getrandbits(64)
            p = f"{d}/{name}.json"
            self.file(p, "json", r.randint(300, 3000), 0o640, uid=KMS_UID, gid=KMS_GID)
            cache_files.append(p)
        for i in range(n_dedup):
            src = cache_files[(i * 397) % len(cache_files)]
            self.hardlink(f"opt/kms/data/dedup/{i:04d}-{src.rsplit('/', 1)[1]}", src)

    # -- tamper set ----------------------------------------------------------------
    def tamper_set(self) -> dict:
        """The deterministic tamper set: chosen from the plan, never from the disk."""
        r = rng_for(self.seed, "tamper")
        linked = {src for _, src in self.hardlinks}
        rel_targets = set()
        for p, t in self.symlinks:
            if not t.startswith("/"):
                rel_targets.add(os.path.normpath(os.path.join(os.path.dirname(p), t)))
        pool = sorted(s.path for s in self.files
                      if not s.big and not s.acl and s.path not in linked
                      and s.path not in rel_targets)
        # Spread the picks over the areas an attacker (or a careless admin) would touch.
        areas = ["etc/kms-client/tenants/", "etc/kms-client/", "etc/ssl/", "etc/pki/",
                 "usr/lib/", "usr/", "opt/kms/releases/", "opt/kms/data/"]
        buckets = [[p for p in pool if p.startswith(a)] for a in areas]
        for i, a in enumerate(areas):  # a path belongs to its most specific area only
            buckets[i] = [p for p in buckets[i]
                          if not any(p.startswith(b) for b in areas if len(b) > len(a))]
        buckets = [b for b in buckets if b]
        for b in buckets:
            r.shuffle(b)
        picked: list[str] = []
        i = 0
        while len(picked) < 24:  # round-robin over the areas until 24 distinct paths
            b = buckets[i % len(buckets)]
            if b:
                picked.append(b.pop())
            i += 1
        content, mode, delete = picked[:9], picked[9:19], picked[19:24]
        big = [s.path for s in self.files if s.big][-1]
        # Stealthy: same size, mtime put back: only the digest (and ctime) give it away.
        stealthy = [content[0], big]
        content = content[1:]
        tenant_dir = next(s.path for s in self.files
                          if s.path.endswith("/certs/client-cert-0.pem")).rsplit("/", 1)[0]
        add = [
            "etc/kms-client/conf.d/99-zz-override.yaml",
            "usr/lib/x86_64-linux-gnu/pkcs11/libshim-pkcs11.so",
            "etc/ssl/certs/rogue-root-ca.pem",
            f"{tenant_dir}/client-cert-8.pem",
            "opt/kms/releases/%s/bin/kms-agent.dbg" % CURRENT_RELEASE,
        ]
        for a in add:
            assert a not in self.by_path and a.rsplit("/", 1)[0] in self.dirs, a
        return {"content": content, "stealthy": stealthy, "mode": mode,
                "delete": delete, "add": add}


# -- content ------------------------------------------------------------------------
PEM_LABELS = {"cert": "CERTIFICATE", "key": "PRIVATE KEY", "crl": "X509 CRL"}


def pem(label: str, body: bytes) -> bytes:
    b = base64.b64encode(body)
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return (b"-----BEGIN %s-----\n" % label.encode() + b"\n".join(lines)
            + b"\n-----END %s-----\n" % label.encode())


def fields(r: random.Random, size: int) -> list[tuple[str, str]]:
    """Key/value pairs (word_N, hex) adding up to about `size` bytes, from one PRNG call."""
    raw = r.randbytes(max(32, size // 2 + 64))
    hx = raw.hex()
    out = []
    total = pos = i = 0
    while total < size:
        b = raw[i % len(raw)]
        n = 8 + (b & 31)
        out.append((f"{WORDS[b % len(WORDS)]}_{i}", hx[pos:pos + n]))
        pos += n
        total += n + 16
        i += 1
    return out


def text_content(kind: str, size: int, r: random.Random, path: str) -> bytes:
    if kind in PEM_LABELS:
        return pem(PEM_LABELS[kind], r.randbytes(max(64, size * 3 // 4 - 60)))
    if kind == "certbundle":
        out = []
        total = 0
        while total < size:
            n = r.randint(900, 1900)
            out.append(b"# %s\n" % r.choice(WORDS).title().encode())
            out.append(pem("CERTIFICATE", r.randbytes(n)))
            total += n * 4 // 3 + 80
        return b"".join(out)
    if kind == "yaml":
        out = ["# managed by kms-deploy; do not edit",
               "apiVersion: kms.acme.io/v1",
               f"kind: {WORDS[r.getrandbits(8) % len(WORDS)].title()}",
               "metadata:", f"  name: {path.rsplit('/', 1)[-1]}"]
        for i, (k, v) in enumerate(fields(r, size - 120 - len(path))):
            if i % 4 == 0:
                out.append(f"{k.split('_')[0]}:")
            out.append(f"  {k}: {v}")
        return ("\n".join(out) + "\n").encode()
    if kind == "json":
        body = ",\n".join(f'    "{k}": "{v}"' for k, v in fields(r, size - 100 - len(path)))
        return (f'{{\n  "id": "{r.randbytes(16).hex()}",\n  "path": "{path}",\n'
                f'  "fields": {{\n{body}\n  }}\n}}\n').encode()
    if kind in ("conf", "text"):
        words = [WORDS[b % len(WORDS)] for b in r.randbytes(max(8, size // 6))]
        return ("\n".join(" ".join(words[i:i + 10]) for i in range(0, len(words), 10))
                + "\n").encode()
    raise ValueError(kind)


def content(seed: int, spec: Spec, salt: str = "") -> bytes:
    """Whole content of a non-big file."""
    r = rng_for(seed, spec.path + salt)
    if spec.kind in ("so", "elf"):
        return b"\x7fELF\x02\x01\x01\x00" + r.randbytes(spec.size - 8)
    if spec.kind == "bin":
        return r.randbytes(spec.size)
    return text_content(spec.kind, spec.size, r, spec.path)


def big_block(seed: int, path: str) -> bytes:
    return rng_for(seed, path + "#block").randbytes(MIB)


def big_chunk(seed: int, path: str, block: bytes, i: int) -> bytes:
    """MiB number i of a big file: the per-file block with a per-MiB digest at its head."""
    head = hashlib.blake2b(f"{seed}\0{path}\0{i}".encode(), digest_size=64).digest()
    return head + block[64:]


def mtime_ns(seed: int, path: str) -> int:
    r = rng_for(seed, path + "#mtime")
    return (BASE_EPOCH + r.randrange(365 * 86400)) * 10**9 + r.randrange(10**9)


def acl_xattr(mode: int) -> bytes:
    """system.posix_acl_access value: owner, one named reader, group, mask, other."""
    undef = 0xFFFFFFFF
    ents = [(0x01, (mode >> 6) & 7, undef), (0x02, 4, ACL_READER_UID),
            (0x04, (mode >> 3) & 7, undef), (0x10, ((mode >> 3) & 7) | 4, undef),
            (0x20, mode & 7, undef)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in ents)


# -- writing ------------------------------------------------------------------------
class Writer:
    def __init__(self, root: str, seed: int):
        self.root = root
        self.seed = seed
        self.is_root = os.geteuid() == 0
        self.bytes = 0
        self.warned: set[str] = set()

    def p(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def warn_once(self, what: str, e: OSError) -> None:
        if what not in self.warned:
            self.warned.add(what)
            print(f"make-corpus: warning: {what} not applied ({e}); continuing",
                  file=sys.stderr)

    def write_file(self, spec: Spec, data: bytes | None = None) -> None:
        fd = os.open(self.p(spec.path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                     0o600)
        try:
            if spec.big:
                block = big_block(self.seed, spec.path)
                for i in range(spec.size // MIB):
                    self.bytes += os.write(fd, big_chunk(self.seed, spec.path, block, i))
            else:
                buf = content(self.seed, spec) if data is None else data
                view = memoryview(buf)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                self.bytes += len(buf)
            self.apply_meta(fd, spec)
        finally:
            os.close(fd)

    def apply_meta(self, fd: int, spec: Spec) -> None:
        if self.is_root and (spec.uid or spec.gid):
            os.fchown(fd, spec.uid, spec.gid)
        os.fchmod(fd, spec.mode)
        for name, value in spec.xattrs:
            try:
                os.setxattr(fd, name, value)
            except OSError as e:
                self.warn_once("user xattrs", e)
        if spec.acl:
            try:
                os.setxattr(fd, "system.posix_acl_access", acl_xattr(spec.mode))
            except OSError as e:
                self.warn_once("POSIX ACLs", e)
        t = mtime_ns(self.seed, spec.path)
        os.utime(fd, ns=(t, t))

    def finish_dirs(self, dirs: dict[str, int], only: set[str] | None = None) -> None:
        """Final modes and mtimes, deepest first (creating an entry moves the parent's)."""
        for d in sorted(dirs, key=lambda x: (-x.count("/"), x)):
            if only is not None and d not in only:
                continue
            os.chmod(self.p(d), dirs[d])
            os.utime(self.p(d), ns=(DIR_MTIME_NS, DIR_MTIME_NS))
        if only is None:
            for top in {d.split("/", 1)[0] for d in dirs}:
                os.utime(self.p(top), ns=(DIR_MTIME_NS, DIR_MTIME_NS))


def generate(root: str, nfiles: int, seed: int) -> None:
    t0 = time.monotonic()
    plan = Plan(nfiles, seed)
    old_umask = os.umask(0o022)
    w = Writer(root, seed)
    for d in sorted(plan.dirs):
        os.makedirs(w.p(d), exist_ok=True)
    for spec in plan.files:
        w.write_file(spec)
    for path, src in plan.hardlinks:
        os.link(w.p(src), w.p(path))
    for path, target in plan.symlinks:
        os.symlink(target, w.p(path))
        t = mtime_ns(seed, path)
        os.utime(w.p(path), ns=(t, t), follow_symlinks=False)
    w.finish_dirs(plan.dirs)
    os.umask(old_umask)
    write_meta(root, {"generator_version": GEN_VERSION, "files": nfiles, "seed": seed,
                      "state": "clean", "tamper": None})
    dt = time.monotonic() - t0
    print(f"make-corpus: {root}: {len(plan.files)} files, {len(plan.hardlinks)} hard links, "
          f"{len(plan.symlinks)} symlinks, {len(plan.dirs)} directories, "
          f"{w.bytes / MIB:.1f} MiB in {dt:.1f} s", file=sys.stderr)


def write_meta(root: str, meta: dict) -> None:
    tmp = os.path.join(root, META + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(root, META))
    # Keep the metadata file's own mtime deterministic too.
    os.utime(os.path.join(root, META), ns=(DIR_MTIME_NS, DIR_MTIME_NS))
    os.utime(root, ns=(DIR_MTIME_NS, DIR_MTIME_NS))


def read_meta(root: str) -> dict:
    try:
        with open(os.path.join(root, META)) as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"make-corpus: {root} has no {META}: not a generated corpus "
                 "(or its generation did not finish)")


def parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0]


def tamper(root: str) -> None:
    meta = read_meta(root)
    if meta["state"] != "clean":
        sys.exit(f"make-corpus: {root} is already tampered with; run --restore first")
    plan = Plan(meta["files"], meta["seed"])
    ts = plan.tamper_set()
    meta["state"] = "tampering"
    meta["tamper"] = ts
    write_meta(root, meta)
    w = Writer(root, plan.seed)
    out = []
    for rel in ts["content"]:
        spec = plan.by_path[rel]
        w.write_file(spec, content(plan.seed, spec, "#tampered") + b"# tampered\n")
        # A fresh mtime, as an ordinary edit would leave.
        t = DIR_MTIME_NS + 86400 * 10**9
        os.utime(w.p(rel), ns=(t, t))
        out.append(("changed", rel, "content"))
    for rel in ts["stealthy"]:
        spec = plan.by_path[rel]
        with open(w.p(rel), "r+b") as f:
            off = (spec.size // 2) & ~4095 if spec.big else spec.size // 2
            f.seek(off)
            old = f.read(16)
            f.seek(off)
            f.write(bytes(b ^ 0x5A for b in old))
        t = mtime_ns(plan.seed, rel)
        os.utime(w.p(rel), ns=(t, t))
        out.append(("changed", rel, "content-stealthy"))
    for rel in ts["mode"]:
        m = plan.by_path[rel].mode
        os.chmod(w.p(rel), m | 0o044 if m | 0o044 != m else m | 0o002)
        out.append(("changed", rel, "mode"))
    touched_dirs = set()
    for rel in ts["delete"]:
        os.unlink(w.p(rel))
        touched_dirs.add(parent(rel))
        out.append(("removed", rel, "delete"))
    for i, rel in enumerate(ts["add"]):
        kind = "so" if rel.endswith(".so") or rel.endswith(".dbg") else (
            "cert" if rel.endswith(".pem") else "yaml")
        spec = Spec(rel, kind, 2000 + 1000 * i, 0o644)
        w.write_file(spec)
        touched_dirs.add(parent(rel))
        out.append(("added", rel, "add"))
    for d in sorted(touched_dirs):
        out.append(("changed", d, "dir-side-effect"))
    meta["state"] = "tampered"
    write_meta(root, meta)
    for status, rel, what in out:
        print(f"{status}\t/{rel}\t{what}")


def restore(root: str) -> None:
    meta = read_meta(root)
    if meta["state"] == "clean":
        print(f"make-corpus: {root} is clean; nothing to restore", file=sys.stderr)
        return
    plan = Plan(meta["files"], meta["seed"])
    ts = meta["tamper"] or plan.tamper_set()
    w = Writer(root, plan.seed)
    for rel in ts["add"]:
        try:
            os.unlink(w.p(rel))
        except FileNotFoundError:
            pass
    for rel in ts["content"] + ts["stealthy"] + ts["mode"] + ts["delete"]:
        spec = plan.by_path[rel]
        if spec.big:  # only the patched MiB needs rewriting
            i = ((spec.size // 2) & ~4095) // MIB
            with open(w.p(rel), "r+b") as f:
                f.seek(i * MIB)
                f.write(big_chunk(plan.seed, rel, big_block(plan.seed, rel), i))
                w.apply_meta(f.fileno(), spec)
        else:
            w.write_file(spec)
    dirs = {parent(rel) for rel in ts["add"] + ts["delete"]}
    w.finish_dirs(plan.dirs, only=dirs)
    meta["state"] = "clean"
    meta["tamper"] = None
    write_meta(root, meta)
    print(f"make-corpus: {root}: restored", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=100_000,
                    help="number of non-directory entries (default 100000)")
    ap.add_argument("--seed", type=int, default=1, help="PRNG seed (default 1)")
    ap.add_argument("--force", action="store_true",
                    help="remove DIR first if it exists and is not empty")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--tamper", action="store_true", help="apply the tamper set")
    g.add_argument("--restore", action="store_true", help="undo --tamper")
    g.add_argument("--status", action="store_true", help="print the corpus metadata")
    a = ap.parse_args()
    root = os.path.abspath(a.dir)
    if a.tamper:
        return tamper(root)
    if a.restore:
        return restore(root)
    if a.status:
        print(json.dumps(read_meta(root), indent=2, sort_keys=True))
        return
    if a.files < 500:
        ap.error("--files must be at least 500")
    if os.path.isdir(root) and os.listdir(root):
        if not a.force:
            sys.exit(f"make-corpus: {root} exists and is not empty (use --force)")
        shutil.rmtree(root)
    os.makedirs(root, exist_ok=True)
    generate(root, a.files, a.seed)


if __name__ == "__main__":
    main()
