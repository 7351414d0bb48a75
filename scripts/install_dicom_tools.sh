#!/usr/bin/env bash
# Install the DICOM validators the SR tests run (tests/test_pacs_sr_text.py): dcmtk (dsrdump) and dicom3tools
# (dciodvfy). Idempotent and quiet; never fails the caller: on any problem it prints a note and exits 0, and
# those tests then skip with that reason.
set -u

have() {
    command -v dsrdump >/dev/null 2>&1 && command -v dciodvfy >/dev/null 2>&1
}

if have; then
    echo "install_dicom_tools: dsrdump and dciodvfy already present"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install_dicom_tools: note: dsrdump/dciodvfy not found and not running as root; install them with" \
         "'sudo apt-get install -y dcmtk dicom3tools' (the SR validation tests skip meanwhile)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_dicom_tools: note: dsrdump/dciodvfy not found and apt-get unavailable; the SR validation tests skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq >/dev/null 2>&1 \
    && apt-get install -y -qq --no-install-recommends dcmtk dicom3tools >/dev/null 2>&1 && have; then
    echo "install_dicom_tools: installed dcmtk and dicom3tools"
    exit 0
fi
echo "install_dicom_tools: note: could not install dcmtk/dicom3tools (apt failed); the SR validation tests skip"
exit 0
