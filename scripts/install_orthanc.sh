#!/usr/bin/env bash
# Install Orthanc + its DICOMweb plugin for the PACS tests (tests/test_pacs_*.py start their own Orthanc on
# free localhost ports with storage in a temp folder; see tests/orthanc.py).
# Idempotent and quiet; never fails the caller: on any problem it prints a note and exits 0, and the PACS
# tests then skip with that reason. The Debian package's own service is stopped and disabled: nothing is
# left listening on Orthanc's default ports (4242, 8042).
set -u

have() {
    [ -x /usr/sbin/Orthanc ] && ls /usr/share/orthanc/plugins/libOrthancDicomWeb.so* >/dev/null 2>&1
}

if have; then
    echo "install_orthanc: Orthanc and the DICOMweb plugin already present"
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    echo "install_orthanc: note: Orthanc not found and not running as root; install it with" \
         "'sudo apt-get install -y orthanc orthanc-dicomweb' (PACS tests will skip meanwhile)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_orthanc: note: Orthanc not found and apt-get unavailable; PACS tests will skip"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the package's post-install from starting the system service (policy-rc.d exit 101 = "not allowed").
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
ok=0
if apt-get update -qq >/dev/null 2>&1 \
    && apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb >/dev/null 2>&1; then
    ok=1
fi
[ "$made_policy" = 1 ] && rm -f "$policy"
# Belt and braces: whatever started it, stop and disable the system service.
(service orthanc stop || systemctl stop orthanc) >/dev/null 2>&1 || true
(systemctl disable orthanc || update-rc.d orthanc disable) >/dev/null 2>&1 || true

if [ "$ok" = 1 ] && have; then
    echo "install_orthanc: installed Orthanc $(/usr/sbin/Orthanc --version 2>/dev/null | head -1 | awk '{print $2}') with DICOMweb"
    exit 0
fi
echo "install_orthanc: note: could not install orthanc/orthanc-dicomweb (apt failed); PACS tests will skip"
exit 0
