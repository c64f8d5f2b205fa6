"""De-identifies DICOM files with a standard tool, dicom-anonymizer (its
DICOM PS3.15 Table E.1-1 Basic Profile actions: X removed, Z emptied, D
dummied, U replaced, private attributes deleted), then records what it did
the way PS3.15 E.1.1 asks: PatientIdentityRemoved YES, DeidentificationMethod
and the CID 7050 code 113100.

usage: basic_profile_tool.py <out-dir> <file>...
"""
import os
import sys

import pydicom
from dicomanonymizer import anonymize
from pydicom.dataset import Dataset


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for src in sys.argv[2:]:
        dst = os.path.join(out, os.path.basename(src))
        anonymize(src, dst, {}, True)
        ds = pydicom.dcmread(dst)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "dicom-anonymizer 2.1.0 (DICOM PS3.15 Basic Profile)"
        code = Dataset()
        code.CodeValue = "113100"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = [code]
        ds.save_as(dst)
    print(len(sys.argv) - 2)


if __name__ == "__main__":
    main()
