#!/usr/bin/python3
"""Put the Debian packages a QEMU functional test needs into its asset cache.

    scripts/prefill-functional-assets.py [--cache DIR] [--from DIR] TEST.py...

QEMU's functional tests name their downloads as Asset(URL, SHA256) and keep
them in $QEMU_TEST_CACHE_DIR/download/SHA256 (default
~/.cache/qemu/download/SHA256); `make check-functional` runs with
QEMU_TEST_NO_DOWNLOAD=1 and skips a test whose assets are not there.  Where
only the Debian mirror apt uses is reachable (as in CI), the tests' own
download of the pool URL may fail, so this script fetches the same .deb files
through apt: for each Asset of a test whose URL ends in .deb it

  - leaves a cache entry alone if its sha256 is right;
  - else takes a file of the same name from the --from directories (the
    guest image's download cache, say) if its sha256 matches;
  - else asks apt which version of the package has that sha256
    (apt-cache show) and runs apt-get download for exactly that version.

Every file is checked against the test's sha256 before it goes into the
cache; a package whose version apt no longer offers is an error that says
so.  Other assets (not .deb) are left to the test's own download.
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

ASSET_RE = re.compile(r"Asset\(\s*\(?\s*((?:(?:f?'[^']*'|f?\"[^\"]*\")\s*)+)"
                      r"\)?\s*,\s*'([0-9a-f]{64})'\s*\)", re.S)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def assets_of(test):
    """(url, sha256) of each Asset in a test file; f-strings are expanded
    with the module's simple string constants."""
    text = open(test, encoding="utf-8").read()
    consts = dict(re.findall(r"^([A-Z_]+) = '([^']*)'$", text, re.M))
    out = []
    for parts, digest in ASSET_RE.findall(text):
        url = ""
        for fmt, s in re.findall(r"(f?)(?:'([^']*)'|\"[^\"]*\")", parts):
            if fmt:
                s = re.sub(r"\{([A-Z_]+)\}", lambda m: consts[m.group(1)], s)
            url += s
        out.append((url, digest))
    return out


def apt_version(package, digest):
    """The version of @package whose .deb has sha256 @digest, or None."""
    show = subprocess.run(["apt-cache", "show", package], capture_output=True,
                          text=True)
    version = None
    for line in show.stdout.splitlines():
        if line.startswith("Version: "):
            version = line.split(" ", 1)[1]
        elif line.startswith("SHA256: ") and line.split(" ", 1)[1] == digest:
            return version
    return None


def fetch(url, digest, cache, sources):
    dest = os.path.join(cache, digest)
    name = urllib.parse.unquote(os.path.basename(urllib.parse.urlparse(url).path))
    if os.path.exists(dest) and sha256(dest) == digest:
        print(f"ok: {name} already cached")
        return True
    package = name.split("_", 1)[0]
    # apt-get download names files with the epoch (1%3a...), the pool not.
    for d in sources:
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if f.startswith(package + "_") and f.endswith(".deb"):
                path = os.path.join(d, f)
                if sha256(path) == digest:
                    shutil.copyfile(path, dest + ".tmp")
                    os.replace(dest + ".tmp", dest)
                    print(f"ok: {name} from {path}")
                    return True
    version = apt_version(package, digest)
    if version is None:
        print(f"error: apt offers no version of {package} with sha256 "
              f"{digest} (the test wants {name}; run apt-get update, or the "
              "archive has dropped that version)", file=sys.stderr)
        return False
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["apt-get", "download", f"{package}={version}"],
                           cwd=tmp, capture_output=True, text=True)
        got = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if r.returncode != 0 or len(got) != 1:
            print(f"error: apt-get download {package}={version} failed: "
                  f"{r.stderr.strip()}", file=sys.stderr)
            return False
        path = os.path.join(tmp, got[0])
        if sha256(path) != digest:
            print(f"error: {got[0]} from apt has sha256 {sha256(path)}, "
                  f"the test wants {digest}", file=sys.stderr)
            return False
        shutil.copyfile(path, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
    print(f"ok: {name} ({package}={version}) from apt")
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", help="the asset cache's parent directory "
                    "(default: $QEMU_TEST_CACHE_DIR, else ~/.cache/qemu)")
    ap.add_argument("--from", dest="sources", action="append", default=[],
                    help="a directory of .deb files to take them from first")
    ap.add_argument("tests", nargs="+")
    args = ap.parse_args()
    top = args.cache or os.environ.get("QEMU_TEST_CACHE_DIR") or \
        os.path.join(os.path.expanduser("~"), ".cache", "qemu")
    cache = os.path.join(top, "download")
    os.makedirs(cache, exist_ok=True)
    ok = True
    n = 0
    for test in args.tests:
        for url, digest in assets_of(test):
            if url.endswith(".deb"):
                n += 1
                ok = fetch(url, digest, cache, args.sources) and ok
    if n == 0:
        print("error: no .deb assets found in " + " ".join(args.tests),
              file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
