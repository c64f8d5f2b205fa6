"""What a user of the well-known Python client does to read a PACS's metadata:
dicomweb-client's QIDO-RS study search (paged with limit / offset, as Clew
pages), each study's series, and each series' WADO-RS metadata, one request
at a time as the client makes them. Prints one JSON line:
{"studies", "series", "instances", "seconds"} (wall time of the reading, not
of Python's start). Used by `clew-bench dicomweb`.

usage: dicomweb_client_scan.py <base-url> <user:password file> <page size>
"""
import json
import sys
import time

from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass


def main() -> None:
    url, auth_file, page = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(auth_file, encoding="utf-8") as f:
        user, password = f.read().strip().split(":", 1)
    client = DICOMwebClient(url=url, session=create_session_from_user_pass(user, password))
    started = time.perf_counter()
    studies = []
    offset = 0
    while True:
        found = client.search_for_studies(limit=page, offset=offset)
        if not found:
            break
        studies += found
        offset += len(found)
    series = instances = 0
    for study in studies:
        study_uid = study["0020000D"]["Value"][0]
        for s in client.search_for_series(study_instance_uid=study_uid):
            metadata = client.retrieve_series_metadata(
                study_instance_uid=study_uid,
                series_instance_uid=s["0020000E"]["Value"][0],
            )
            series += 1
            instances += len(metadata)
    print(json.dumps({"studies": len(studies), "series": series, "instances": instances,
                      "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
