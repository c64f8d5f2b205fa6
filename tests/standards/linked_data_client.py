"""Reads Clew's catalogue and lineage the way a partner portal would: the
DCAT-AP / HealthDCAT-AP JSON-LD with pyld (expansion, no remote contexts) and
rdflib (triples), and the PROV-JSON with the W3C PROV library `prov` (then as
PROV-O triples in rdflib), and validates both DCAT documents with pyshacl
against SEMIC's official DCAT-AP 3.0.1 SHACL shapes (checked in under
shacl/dcat-ap-3.0.1, see its README). Prints one JSON line of what it found.

usage: linked_data_client.py <base-url> <bearer-token> <dataset-id> <lineage-subject>
"""
import json
import os
import sys
import urllib.parse
import urllib.request

import pyshacl
import rdflib
from prov.model import ProvDocument
from pyld import jsonld
from rdflib.namespace import DCTERMS, FOAF, PROV, RDF

DCAT = rdflib.Namespace("http://www.w3.org/ns/dcat#")  # DCAT 3 terms (version, hasVersion)
HEALTH = rdflib.Namespace("http://healthdataportal.eu/ns/health#")
VCARD = rdflib.Namespace("http://www.w3.org/2006/vcard/ns#")
SPDX = rdflib.Namespace("http://spdx.org/rdf/terms#")


def fetch(base, token, path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers.get("content-type"), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read().decode()


def graph_of(text):
    doc = json.loads(text)
    jsonld.expand(doc)  # valid JSON-LD 1.1, nothing fetched
    g = rdflib.Graph()
    g.parse(data=text, format="json-ld")
    return g


SHAPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shacl", "dcat-ap-3.0.1")


def shacl_report(g):
    """Validates `g` against the DCAT-AP 3.0.1 shapes (mandatory and range
    constraints); returns (conforms, the violations' messages)."""
    shapes = rdflib.Graph()
    for name in ("shapes.ttl", "range.ttl"):
        shapes.parse(os.path.join(SHAPES_DIR, name), format="turtle")
    conforms, report, _ = pyshacl.validate(g, shacl_graph=shapes, inference="none", allow_warnings=True)
    SH = rdflib.Namespace("http://www.w3.org/ns/shacl#")
    violations = []
    for r in report.subjects(RDF.type, SH.ValidationResult):
        if report.value(r, SH.resultSeverity) == SH.Violation:
            violations.append("%s %s: %s" % (report.value(r, SH.focusNode), report.value(r, SH.resultPath),
                                             report.value(r, SH.resultMessage)))
    return conforms, sorted(violations)


def main():
    base, token, dataset_id, subject = sys.argv[1:5]
    out = {}
    status, ctype, text = fetch(base, token, "/catalog.jsonld")
    out["catalog_status"], out["catalog_type"] = status, ctype
    g = graph_of(text)
    out["catalog_shacl_conforms"], out["catalog_shacl_violations"] = shacl_report(g)
    catalogs = list(g.subjects(RDF.type, DCAT.Catalog))
    out["catalog_datasets"] = sorted(
        str(g.value(d, DCTERMS.identifier)) for c in catalogs for d in g.objects(c, DCAT.dataset))

    status, _, text = fetch(base, token, f"/datasets/{dataset_id}/dcat.jsonld")
    out["dataset_status"] = status
    if status == 200:
        g = graph_of(text)
        out["dataset_shacl_conforms"], out["dataset_shacl_violations"] = shacl_report(g)
        ds = rdflib.URIRef(f"{base}/datasets/{dataset_id}")
        one = lambda s, p: None if g.value(s, p) is None else str(g.value(s, p))  # noqa: E731
        publisher = g.value(ds, DCTERMS.publisher)
        contact = g.value(ds, DCAT.contactPoint)
        out["dataset"] = {
            "types": sorted(str(t) for t in g.objects(ds, RDF.type)),
            "identifier": one(ds, DCTERMS.identifier),
            "title": one(ds, DCTERMS.title),
            "description": one(ds, DCTERMS.description),
            "version": one(ds, DCAT.version),
            "access_rights": one(ds, DCTERMS.accessRights),
            "theme": one(ds, DCAT.theme),
            "license": one(g.value(ds, DCAT.distribution), DCTERMS.license),
            "health_category": one(ds, HEALTH.healthCategory),
            "legislation": one(ds, rdflib.URIRef("http://data.europa.eu/r5r/applicableLegislation")),
            "keywords": sorted(str(k) for k in g.objects(ds, DCAT.keyword)),
            "publisher_name": one(publisher, FOAF.name),
            "contact_fn": one(contact, VCARD.fn),
            "records": one(ds, HEALTH.numberOfRecords),
            "provenance": one(g.value(ds, DCTERMS.provenance), rdflib.RDFS.label),
            "distribution_url": one(g.value(ds, DCAT.distribution), DCAT.accessURL),
        }
        versions = []
        for v in g.objects(ds, DCAT.hasVersion):
            dist = g.value(v, DCAT.distribution)
            period = g.value(v, DCTERMS.temporal)
            versions.append({
                "id": one(v, DCTERMS.identifier),
                "version": one(v, DCAT.version),
                "is_version_of": one(v, DCAT.isVersionOf),
                "records": one(v, HEALTH.numberOfRecords),
                "individuals": one(v, HEALTH.numberOfUniqueIndividuals),
                "access_url": one(dist, DCAT.accessURL),
                "checksum": one(g.value(dist, SPDX.checksum), SPDX.checksumValue),
                "checksum_type": None if g.value(g.value(dist, SPDX.checksum), SPDX.checksumValue) is None
                else str(g.value(g.value(dist, SPDX.checksum), SPDX.checksumValue).datatype),
                "checksums": len(list(g.objects(dist, SPDX.checksum))),
                "format": one(dist, DCTERMS.format),
                "publisher": None if g.value(v, DCTERMS.publisher) is None else str(g.value(v, DCTERMS.publisher)),
                "derived_from": sorted(str(x) for x in g.objects(v, PROV.wasDerivedFrom)),
                "start": one(period, DCAT.startDate),
                "modalities": sorted(str(m) for m in g.objects(v, rdflib.URIRef(base + "/ns#modality"))),
            })
        out["versions"] = sorted(versions, key=lambda v: v["id"] or "")

    query = urllib.parse.urlencode({"subject": subject, "direction": "upstream", "depth": 10})
    status, _, text = fetch(base, token, "/prov/lineage?" + query)
    out["prov_status"] = status
    if status == 200:
        doc = ProvDocument.deserialize(content=text, format="json")
        records = doc.get_records()
        out["prov_counts"] = {}
        for r in records:
            name = type(r).__name__
            out["prov_counts"][name] = out["prov_counts"].get(name, 0) + 1
        usages = []
        for r in records:
            if type(r).__name__ == "ProvUsage":
                args = dict(r.formal_attributes)
                usages.append([str(args[PROV_ACTIVITY]), str(args[PROV_ENTITY])])
        out["prov_usages"] = sorted(usages)
        rdf = rdflib.Graph()
        rdf.parse(data=doc.serialize(format="rdf", rdf_format="trig"), format="trig")
        # PROV-O: a usage with attributes is a qualified usage (prov:qualifiedUsage
        # -> prov:Usage -> prov:entity), one without is the plain prov:used triple.
        used = {(str(s), str(o)) for s, o in rdf.subject_objects(PROV.used)}
        for act, q in rdf.subject_objects(PROV.qualifiedUsage):
            used.add((str(act), str(rdf.value(q, PROV.entity))))
        generated = {(str(s), str(o)) for s, o in rdf.subject_objects(PROV.wasGeneratedBy)}
        for ent, q in rdf.subject_objects(PROV.qualifiedGeneration):
            generated.add((str(ent), str(rdf.value(q, PROV.activity))))
        out["prov_rdf_used"] = sorted([list(p) for p in used])
        out["prov_rdf_generated"] = sorted([list(p) for p in generated])
        out["prov_entities"] = sorted(str(e) for e in rdf.subjects(RDF.type, PROV.Entity))
    print(json.dumps(out))


from prov.constants import PROV_ATTR_ACTIVITY as PROV_ACTIVITY, PROV_ATTR_ENTITY as PROV_ENTITY  # noqa: E402

if __name__ == "__main__":
    main()
