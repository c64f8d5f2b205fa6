#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, on a fresh
# machine. Safe to run again; each step is skipped when already done.
#
#   - Go modules of the outside verifier (golang.org/x/mod: sumdb/note, sumdb/tlog)
#     and of the cosignature checker (transparency-dev/formats: cosignature/v1),
#     from the Go module proxy.
#   - The Apache Kafka broker jars (org.apache.kafka:kafka_2.13, KRaft) for the
#     Kafka tests, from Maven Central into target/kafka-broker/libs.
#   - The Python partner's packages (confluent-kafka, protobuf, grpcio-tools,
#     cryptography), from PyPI into the virtualenv target/partner-venv.
#   - pydicom and dicom-anonymizer (PyPI) into target/dicom-venv, and the real DICOM files its
#     wheel ships copied into target/dicom-files, for the ingest tests and
#     `clew-bench dicom`.
#   - the outside clients of Clew's standard interfaces (openlineage-python,
#     pyld, rdflib), from PyPI into target/standards-venv.
#   - helm (built with `go install` from the Go module proxy) into
#     target/tools/bin, kubernetes-validate (PyPI, ships the Kubernetes
#     schemas) and checkov (PyPI) into target/chart-venv, for the chart checks.
#   - SeaweedFS (`weed`, Apache-2.0), an S3-compatible object store, built from
#     its module source (its go.mod has replace directives, so `go install`
#     refuses it) into target/tools/bin, for the blob store's tests.
#   - Orthanc and its DICOMweb plugin (GPL-3.0 / AGPL-3.0, the operating
#     system's packages orthanc and orthanc-dicomweb), a real PACS for the
#     DICOMweb ingest tests; each test starts its own (tests/pacs), never the
#     system service.
#   - litewitness and witnessctl (filippo.io/torchwood, BSD-3-Clause), a real
#     C2SP tlog-witness, built with `go install` from the Go module proxy into
#     target/tools/bin, for the witness tests (its key lives in ssh-agent,
#     from openssh-client).
#   - omniwitness and its generate_keys (github.com/transparency-dev/witness,
#     Apache-2.0), a second real C2SP tlog-witness, built with `go install`
#     from the Go module proxy into target/tools/bin.
#   - dicomweb-client (PyPI) into target/dicomweb-venv, the well-known client
#     `clew-bench dicomweb` measures Clew against.
#   - the web pages' npm packages (services/web/package-lock.json: @noble/ed25519,
#     @noble/hashes, @bufbuild/protobuf, and axe-core for the accessibility
#     checks) into target/web-npm, so the tests can check the copies vendored
#     in services/web/assets/vendor against them; nothing is fetched at build
#     or run time.
#   - Chromium and its WebDriver (the operating system's packages chromium and
#     chromium-driver, BSD-3-Clause), a real browser for the web catalogue's
#     tests; each test starts its own headless session.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is not installed; $2" >&2; exit 1; }
}
need cargo "install Rust (https://rustup.rs)"
need go "install Go 1.22 or newer (the outside-verifier test builds a Go program)"
need java "install a Java 17+ runtime (the Kafka tests run a real broker)"
need mvn "install Maven (it resolves the Kafka broker jars)"
need python3 "install Python 3.9+ (the partner test is a Python program)"
need npm "install Node.js with npm (the web tests check the vendored front-end packages and run axe-core)"

echo "setup: Go modules for tests/go-verifier and tests/witness-check"
(cd tests/go-verifier && go mod download && go build -o /dev/null .)
(cd tests/witness-check && go mod download && go build -o /dev/null .)

echo "setup: Kafka broker jars"
tests/kafka/fetch.sh

echo "setup: Python partner (tests/partner)"
venv=target/partner-venv
stamp="$venv/.requirements"
if ! cmp -s tests/partner/requirements.txt "$stamp" 2>/dev/null; then
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/partner/requirements.txt
  cp tests/partner/requirements.txt "$stamp"
fi
echo "setup: real DICOM files and pydicom (tests/dicom)"
tests/dicom/fetch.sh

echo "setup: standards clients (tests/standards)"
svenv=target/standards-venv
if ! cmp -s tests/standards/requirements.txt "$svenv/.requirements" 2>/dev/null; then
  python3 -m venv --clear "$svenv"
  "$svenv/bin/pip" install --quiet --disable-pip-version-check -r tests/standards/requirements.txt
  cp tests/standards/requirements.txt "$svenv/.requirements"
fi

echo "setup: helm, kubernetes-validate and checkov (chart checks)"
helm_version=v3.22.0
if ! target/tools/bin/helm version 2>/dev/null | grep -q "${helm_version%.*}"; then
  mkdir -p target/tools/bin
  GOBIN="$PWD/target/tools/bin" go install "helm.sh/helm/v3/cmd/helm@$helm_version"
fi
cvenv=target/chart-venv
if ! cmp -s tests/chart/requirements.txt "$cvenv/.requirements" 2>/dev/null; then
  python3 -m venv --clear "$cvenv"
  "$cvenv/bin/pip" install --quiet --disable-pip-version-check -r tests/chart/requirements.txt
  cp tests/chart/requirements.txt "$cvenv/.requirements"
fi
echo "setup: SeaweedFS (S3-compatible store for the blob store tests)"
weed_module=github.com/seaweedfs/seaweedfs
weed_version=v0.0.0-20261109003541-7506e5f91cd6
weed_stamp=target/tools/bin/.weed-version
if [ ! -x target/tools/bin/weed ] || [ "$(cat "$weed_stamp" 2>/dev/null)" != "$weed_version" ]; then
  mkdir -p target/tools/bin target/tools/src
  weed_dir=$(go mod download -json "$weed_module@$weed_version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf target/tools/src/seaweedfs
  cp -r "$weed_dir" target/tools/src/seaweedfs
  chmod -R u+w target/tools/src/seaweedfs
  (cd target/tools/src/seaweedfs && go build -o "$OLDPWD/target/tools/bin/weed" ./weed)
  rm -rf target/tools/src/seaweedfs
  echo "$weed_version" > "$weed_stamp"
fi
echo "setup: Orthanc and its DICOMweb plugin (a real PACS for the DICOMweb ingest tests)"
if [ ! -x /usr/sbin/Orthanc ] || ! ls /usr/lib/orthanc/libOrthancDicomWeb.so* >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The packages' service is not wanted (tests start their own): a policy
  # that refuses service starts keeps it stopped while they install.
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    added_policy=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb
  [ -z "$added_policy" ] || $sudo rm -f "$policy"
fi
echo "setup: litewitness and witnessctl (a real witness for the witness tests)"
lw_version=v0.6.1
lw_stamp=target/tools/bin/.litewitness-version
if [ ! -x target/tools/bin/litewitness ] || [ "$(cat "$lw_stamp" 2>/dev/null)" != "$lw_version" ]; then
  mkdir -p target/tools/bin
  GOBIN="$PWD/target/tools/bin" go install "filippo.io/torchwood/cmd/litewitness@$lw_version" "filippo.io/torchwood/cmd/witnessctl@$lw_version"
  echo "$lw_version" > "$lw_stamp"
fi
echo "setup: omniwitness (a second real witness for the witness tests)"
ow_version=v0.0.0-20260720115447-2e1c6971d19e
ow_stamp=target/tools/bin/.omniwitness-version
if [ ! -x target/tools/bin/omniwitness ] || [ ! -x target/tools/bin/omniwitness-generate-keys ] || [ "$(cat "$ow_stamp" 2>/dev/null)" != "$ow_version" ]; then
  mkdir -p target/tools/bin target/tools/omniwitness
  GOBIN="$PWD/target/tools/omniwitness" go install "github.com/transparency-dev/witness/cmd/omniwitness@$ow_version" "github.com/transparency-dev/witness/cmd/generate_keys@$ow_version"
  mv target/tools/omniwitness/omniwitness target/tools/bin/omniwitness
  mv target/tools/omniwitness/generate_keys target/tools/bin/omniwitness-generate-keys
  echo "$ow_version" > "$ow_stamp"
fi
# litewitness keeps its key in an ssh-agent.
if ! command -v ssh-agent >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client
fi
echo "setup: dicomweb-client (the benchmark's peer)"
dvenv=target/dicomweb-venv
if ! cmp -s tests/dicom/dicomweb-requirements.txt "$dvenv/.requirements" 2>/dev/null; then
  python3 -m venv --clear "$dvenv"
  "$dvenv/bin/pip" install --quiet --disable-pip-version-check -r tests/dicom/dicomweb-requirements.txt
  cp tests/dicom/dicomweb-requirements.txt "$dvenv/.requirements"
fi
echo "setup: the web pages' npm packages (target/web-npm)"
wnpm=target/web-npm
if ! cmp -s services/web/package-lock.json "$wnpm/package-lock.json" 2>/dev/null || [ ! -d "$wnpm/node_modules" ]; then
  rm -rf "$wnpm" && mkdir -p "$wnpm"
  cp services/web/package.json services/web/package-lock.json services/web/.npmrc "$wnpm/"
  (cd "$wnpm" && npm ci --silent)
fi
echo "setup: Chromium and chromedriver (a real browser for the web tests)"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
echo "setup: done"
