#!/usr/bin/env bash
# Resolves the Apache Kafka broker jars (pom.xml next to this script) from
# Maven Central into a cached folder; the test harness runs the same step on
# first use. Usage: tests/kafka/fetch.sh [folder]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-${CLEW_KAFKA_LIBS:-$here/../../target/kafka-broker/libs}}"
if [ -f "$dest/.complete" ]; then echo "kafka broker jars: cached in $dest"; exit 0; fi
tmp="$dest.partial.$$"
rm -rf "$tmp"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$tmp" -DincludeScope=runtime
touch "$tmp/.complete"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp" "$dest"
echo "kafka broker jars: $(ls "$dest" | wc -l) files in $dest"
