"""What users do today: walk a folder and read every DICOM header with
pydicom's dcmread(..., stop_before_pixels=True). Prints one JSON line:
{"files": read, "failed": n, "seconds": wall time}. Used by `clew-bench dicom`."""
import json
import os
import sys
import time

import pydicom


def main() -> None:
    root = sys.argv[1]
    started = time.perf_counter()
    read = failed = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                ds = pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True)
                # Touch what Clew's scan extracts, so both do the same work.
                for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                "Modality", "BodyPartExamined", "Manufacturer",
                                "ManufacturerModelName", "SliceThickness", "StudyDate",
                                "PatientIdentityRemoved"):
                    ds.get(keyword)
                read += 1
            except Exception:  # noqa: BLE001 - a damaged file counts as failed, like Clew's skip
                failed += 1
    print(json.dumps({"files": read, "failed": failed,
                      "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
