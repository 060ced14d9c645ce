# Sourced by the benchmark scripts: the paths they share, a throw-away work
# directory with its own GnuPG home (removed on exit unless KEEP is set),
# and key NAME, which makes an unprotected Ed25519 signing key and prints
# its fingerprint.
root=$(cd "$(dirname "$0")/.." && pwd)
fb="$root/.build/release/fedbatch"
py=${BENCH_PYTHON:-"$root/.venv-bench/bin/python"}
work=$(mktemp -d "/tmp/fb-${bench_name:-bench}-XXXXXX")
export GNUPGHOME="$work/g"
mkdir -m 700 "$GNUPGHOME"
trap 'gpgconf --homedir "$GNUPGHOME" --kill all 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
key() {
  gpg --batch --passphrase '' --quick-gen-key "$1 <$1@bench>" ed25519 sign 0 2>/dev/null
  gpg --with-colons --list-keys "<$1@bench>" 2>/dev/null | awk -F: '/^fpr/{print $10; exit}'
}
