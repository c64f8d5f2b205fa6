#!/usr/bin/env bash
# Installs pydicom (PyPI) into target/dicom-venv and copies the real DICOM
# files its wheel ships (pydicom/data/test_files) into target/dicom-files,
# the cache the ingest tests and `clew-bench dicom` read. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/dicom-venv
if ! cmp -s tests/dicom/requirements.txt "$venv/.requirements" 2>/dev/null; then
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/dicom/requirements.txt
  cp tests/dicom/requirements.txt "$venv/.requirements"
  rm -rf target/dicom-files target/dicom-files.complete
fi
if [ ! -f target/dicom-files.complete ]; then
  src=$("$venv/bin/python" -c 'import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))')
  rm -rf target/dicom-files target/dicom-files.complete
  mkdir -p target/dicom-files
  cp -R "$src"/. target/dicom-files/
  touch target/dicom-files.complete
fi
echo "dicom: $(find target/dicom-files -name '*.dcm' | wc -l) files from pydicom $("$venv/bin/python" -c 'import pydicom; print(pydicom.__version__)') in target/dicom-files"
