#!/usr/bin/env bash
# Installs the system packages the test suite needs: PostgreSQL server binaries
# (tests start a throwaway cluster), runuser (initdb refuses to run as root), chromium (the page tests drive it
# headless through Playwright), curl and jq (the README walk-through is run as written) and poppler-utils (pdftoppm
# and pdftotext: the REMS form PDF tests render the PDF and read its text back).
# Idempotent and silent when everything is already there.
set -euo pipefail

have_initdb() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && return 0
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

have_command() {
    # runuser/useradd live in sbin, which a non-root PATH may lack.
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]
}

packages=()
have_initdb || packages+=(postgresql)
have_command runuser || packages+=(util-linux)
have_command chromium || packages+=(chromium)
have_command curl || packages+=(curl)  # the README walk-through test runs its curl and jq lines
have_command jq || packages+=(jq)
{ have_command pdftoppm && have_command pdftotext; } || packages+=(poppler-utils)
if [[ "$(id -u)" -eq 0 ]] && ! have_command useradd; then
    packages+=(passwd)
fi

[[ ${#packages[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-packages: apt-get not found; install these yourself: ${packages[*]}" >&2
    exit 1
fi

if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "install-system-packages: not root and no password-less sudo; install: ${packages[*]}" >&2
    echo "  e.g. sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
fi

echo "install-system-packages: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if ! have_command chromium; then
    echo "install-system-packages: chromium installed but not found on PATH" >&2
    exit 1
fi
if ! have_initdb; then
    echo "install-system-packages: postgresql installed but initdb/pg_ctl still not found" >&2
    exit 1
fi
