#!/usr/bin/env bash
# The whole test suite: installs the real peers the tests talk to, then
# checks formatting, vets, runs every test with the race detector, and
# fuzzes the protocol codec for a few seconds per target.
#
# Usage: ./test/run.sh            (README's test command; .ci/run calls it)
#        FUZZTIME=30s ./test/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the interop tests need: gearmand and its CLIs as the
# reference server and real clients, PHP and Perl clients, stunnel to wrap
# real clients in TLS, chromium for the status page screenshot.
packages=(gearman-job-server gearman-tools php-cli php-gearman libgearman-client-perl stunnel4 chromium)

missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo="sudo"; else
      echo "FATAL: need root or sudo to install: ${missing[*]}" >&2; exit 1
    fi
  fi
  if ! $sudo apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; then
    echo "FATAL: could not install ${missing[*]}; the interop tests cannot run without them" >&2
    exit 1
  fi
fi
for bin in gearmand gearman gearadmin php perl; do
  command -v "$bin" >/dev/null || { echo "FATAL: $bin not found after install" >&2; exit 1; }
done
# Ask PHP itself: `php -m | grep -q` can fail under pipefail when grep
# exits before php has written everything (SIGPIPE).
php -r 'exit(extension_loaded("gearman") ? 0 : 1);' || { echo "FATAL: php-gearman extension not loaded" >&2; exit 1; }

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

echo "== fuzz (${FUZZTIME:-5s} per target)"
for target in FuzzReader FuzzSplitLine; do
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-5s}" ./protocol
done
echo "== all tests passed"
