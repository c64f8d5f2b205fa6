"""The real OpenLineage Python client, its HTTP transport pointed at a running
Clew server (POST /api/v1/lineage, as for Marquez). Emits a run's START and
COMPLETE (a resampling transform), a retry of the COMPLETE, a training run,
a DatasetEvent, a JobEvent and a COMPLETE citing a dataset Clew does not know.
Prints one JSON line: the run ids and the HTTP status of each emission.

usage: openlineage_client.py <base-url> <bearer-token> <input-version-id> <output-dataset-id> <output-version>
"""
import json
import sys
from datetime import datetime, timezone

import attr
import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    JobEvent,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    StaticDataset,
)
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    execution_parameters_run,
    job_type_job,
    processing_engine_run,
    source_code_location_job,
)
from openlineage.client.generated.base import InputDatasetFacet
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport
from openlineage.client.uuid import generate_new_uuid

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/client/python"


@attr.define
class DatasetRoleInputFacet(InputDatasetFacet):
    """A custom input facet: the dataset's role in a training run."""

    role: str

    @staticmethod
    def _get_schema() -> str:
        return "https://clew.example.org/openlineage/DatasetRoleInputFacet.json"


def main() -> None:
    base, token, input_version, output_dataset, output_version = sys.argv[1:6]
    client = OpenLineageClient(
        transport=HttpTransport(
            HttpConfig(url=base, endpoint="api/v1/lineage", auth=ApiKeyTokenProvider({"apiKey": token}),
                       retry={"total": 0})
        )
    )
    now = lambda: datetime.now(timezone.utc).isoformat()  # noqa: E731
    statuses = {}

    def emit(label, event):
        try:
            statuses[label] = client.transport.emit(event).status_code
        except requests.HTTPError as e:
            statuses[label] = e.response.status_code
            statuses[label + "_error"] = e.response.text

    resample_job = Job(
        namespace="nhs-imaging",
        name="resample-cxr",
        facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="CLEW", jobType="RESAMPLING"),
            "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                type="git", url="https://git.example.nhs.uk/imaging/resample", version="3f2c9d1e7a4b"),
        },
    )
    run_id = str(generate_new_uuid())
    inputs = [InputDataset(namespace="clew", name=input_version)]
    outputs = [OutputDataset(namespace="clew", name=output_dataset, facets={
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=output_version)})]
    run_facets = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(version="2.4.1", name="clew-resampler"),
        "executionParameters": execution_parameters_run.ExecutionParametersRunFacet(parameters=[
            execution_parameters_run.ExecutionParameter(key="spacing_mm", value="0.5")]),
    }
    emit("start", RunEvent(eventType=RunState.START, eventTime=now(), run=Run(runId=run_id, facets=run_facets),
                           job=resample_job, inputs=inputs, outputs=[], producer=PRODUCER))
    complete = RunEvent(eventType=RunState.COMPLETE, eventTime=now(), run=Run(runId=run_id, facets=run_facets),
                        job=resample_job, inputs=inputs, outputs=outputs, producer=PRODUCER)
    emit("complete", complete)
    emit("retry", complete)

    training_id = str(generate_new_uuid())
    training_job = Job(namespace="nhs-imaging", name="cxr-triage-ol", facets={
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="CLEW", jobType="TRAINING")})
    emit("training", RunEvent(
        eventType=RunState.COMPLETE, eventTime=now(),
        run=Run(runId=training_id, facets={
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(version="2.5.1", name="pytorch")}),
        job=training_job,
        inputs=[InputDataset(namespace="clew", name=f"{output_dataset}@{output_version}",
                             inputFacets={"datasetRole": DatasetRoleInputFacet(role="train")})],
        outputs=[OutputDataset(namespace="clew-model", name="cxr-triage-ol-1")],
        producer=PRODUCER))

    emit("dataset_event", DatasetEvent(eventTime=now(), producer=PRODUCER,
                                       dataset=StaticDataset(namespace="clew", name=input_version)))
    emit("job_event", JobEvent(eventTime=now(), producer=PRODUCER, job=resample_job, inputs=inputs))
    emit("unknown_input", RunEvent(
        eventType=RunState.COMPLETE, eventTime=now(), run=Run(runId=str(generate_new_uuid())), job=resample_job,
        inputs=[InputDataset(namespace="s3://raw-bucket", name="exports/cxr.csv")], outputs=outputs,
        producer=PRODUCER))
    print(json.dumps({"transform_run": run_id, "training_run": training_id, "status": statuses}))


if __name__ == "__main__":
    main()
