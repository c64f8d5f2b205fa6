// Proof a person can check: the evidence panel verifies a proof-carrying
// answer (format clew.proven-answer/1) in this browser, with the ledger key
// the person pinned, by the same four steps as `clew verify-answer`
// (services/ledger/src/answer.rs):
//   1. the checkpoint's signature (C2SP signed-note) with the pinned key;
//   2. every event's inclusion at its leaf (RFC 6962 §2.1.1 audit path,
//      as RFC 9162 §2.1.3.2 states the algorithm) against the checkpoint's root;
//   3. every envelope's Ed25519 signature (RFC 8032) over its DSSE PAE, by a
//      key whose registration is in the answer, earlier in the log;
//   4. every node is the subject of its event; every edge joins two nodes
//      and is recorded by an event about one end that names the other.
// Nothing here trusts the server: it only fetches the answer.

import * as ed from "./vendor/@noble/ed25519/index.js";
import { sha256, sha512 } from "./vendor/@noble/hashes/sha2.js";
import { BinaryReader, WireType } from "./vendor/@bufbuild/protobuf/dist/esm/wire/binary-encoding.js";

ed.hashes.sha512 = sha512;

export const PINNED = "clew.pinned-ledger-key";
export const PINNED_WITNESSES = "clew.pinned-witnesses";
const FORMAT = "clew.proven-answer/1";
// DSSE payload type of Clew's events (services/events: PAYLOAD_TYPE).
const PAYLOAD_TYPE = "application/vnd.clew.event+protobuf";

const utf8 = new TextEncoder();

function b64(text, what) {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new Error(`${what} is not base64`);
  }
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// A malformed signature or key is a failed check, not an exception.
function ed25519Verify(sig, msg, pub) {
  try {
    return ed.verify(sig, msg, pub);
  } catch {
    return false;
  }
}

const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

// C2SP signed-note key id: the first 4 bytes of SHA-256(name || "\n" || 0x01 || key).
const keyHash = (name, raw) => sha256(concat(utf8.encode(name + "\n"), raw)).slice(0, 4);

/** A C2SP verifier key `<name>+<hex id>+<base64(alg || Ed25519 key)>`:
 * alg 0x01 for signed-note Ed25519, 0x04 for a witness's cosignature/v1
 * key (C2SP tlog-cosignature). */
export function parseVerifierKey(text, alg = 1) {
  const t = text.trim();
  const a = t.indexOf("+");
  const b = t.indexOf("+", a + 1);
  if (a <= 0 || b < 0) throw new Error("the key is not <name>+<id>+<base64>");
  const name = t.slice(0, a);
  const id = t.slice(a + 1, b).toLowerCase();
  const raw = b64(t.slice(b + 1), "the key material");
  if (raw.length !== 33 || raw[0] !== alg) {
    throw new Error(alg === 4 ? `key ${name} is not a cosignature/v1 key` : `key ${name} is not an Ed25519 key`);
  }
  const hash = keyHash(name, raw);
  if (hex(hash) !== id) throw new Error(`key ${name}: its id ${id} does not match the key`);
  return { name, id: `${name}+${id}`, hash, pub: raw.slice(1) };
}

/** A C2SP tlog-checkpoint in a signed note, checked with `key`. */
export function verifyCheckpoint(note, key) {
  const split = note.indexOf("\n\n");
  if (split < 0) throw new Error("the checkpoint is not a signed note");
  const body = note.slice(0, split + 1);
  const lines = body.split("\n");
  const [origin, sizeLine, rootLine] = lines;
  if (!/^[0-9]+$/.test(sizeLine || "")) throw new Error("the checkpoint's size is not a number");
  const root = b64(rootLine || "", "the checkpoint's root hash");
  if (root.length !== 32) throw new Error("the checkpoint's root hash is not 32 bytes");
  if (origin !== key.name) {
    throw new Error(`the checkpoint is of the log ${origin}, not of the pinned key's ${key.name}`);
  }
  const ours = note
    .slice(split + 2)
    .split("\n")
    .filter((l) => l.startsWith("\u2014 " + key.name + " "))
    .map((l) => b64(l.slice(key.name.length + 3), "a note signature"))
    .filter((s) => s.length === 68 && equal(s.slice(0, 4), key.hash));
  if (ours.length === 0) throw new Error("the checkpoint carries no signature by the pinned key");
  if (!ours.some((s) => ed25519Verify(s.slice(4), utf8.encode(body), key.pub))) {
    throw new Error("the checkpoint's signature does not verify with the pinned key");
  }
  return { origin, size: Number(sizeLine), root, body, signatures: note.slice(split + 2).split("\n") };
}

/**
 * The pinned witnesses whose cosignature of the checkpoint verifies
 * (C2SP tlog-cosignature: a line `— <name> base64(key id || 8-byte
 * big-endian time || Ed25519 signature of "cosignature/v1\ntime <t>\n" ||
 * checkpoint body)`); and those without one.
 */
export function cosignedBy(cp, witnesses) {
  const good = [];
  const missing = [];
  for (const w of witnesses) {
    const ok = cp.signatures
      .filter((l) => l.startsWith("\u2014 " + w.name + " "))
      .map((l) => {
        try {
          return b64(l.slice(w.name.length + 3), "a cosignature");
        } catch {
          return new Uint8Array();
        }
      })
      .filter((raw) => raw.length === 76 && equal(raw.slice(0, 4), w.hash))
      .some((raw) => {
        const time = new DataView(raw.buffer, raw.byteOffset + 4, 8).getBigUint64(0);
        const signed = concat(utf8.encode(`cosignature/v1\ntime ${time}\n`), utf8.encode(cp.body));
        return ed25519Verify(raw.slice(12), signed, w.pub);
      });
    (ok ? good : missing).push(w.name);
  }
  return { good, missing };
}

const leafHash = (leaf) => sha256(concat(Uint8Array.of(0), leaf));
const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

/** The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or null. */
export function rootFromInclusion(index, size, leaf, path) {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let r = leafHash(leaf);
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/** The length-delimited fields `wanted` of a protobuf message, by number. */
function fields(bytes, wanted) {
  const reader = new BinaryReader(bytes);
  const out = {};
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (wanted[no] && wireType === WireType.LengthDelimited) {
      const value = wanted[no] === "string" ? reader.string() : reader.bytes();
      (out[no] ??= []).push(value);
    } else {
      reader.skip(wireType, no);
    }
  }
  return out;
}

// DSSE v1 pre-authentication encoding:
// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
function pae(type, body) {
  const t = utf8.encode(type);
  return concat(utf8.encode(`DSSEv1 ${t.length} `), t, utf8.encode(` ${body.length} `), body);
}

/** An envelope (proto/clew/v1/envelope.proto) and its event's fields. */
function openEnvelope(leaf) {
  const env = fields(leaf, { 1: "bytes", 2: "string", 3: "bytes" });
  const payload = env[1]?.[0] ?? new Uint8Array();
  const sigs = (env[3] ?? []).map((s) => fields(s, { 1: "bytes", 2: "string" }));
  if (sigs.length !== 1) throw new Error(`the envelope has ${sigs.length} signatures, not 1`);
  // Event (proto/clew/v1/events.proto): subject = 3, key_id = 6,
  // principal_registered = 10 with verifier_key = 4.
  const event = fields(payload, { 3: "string", 6: "string", 10: "bytes" });
  const registered = event[10]?.[0] ? fields(event[10][0], { 4: "string" })[4]?.[0] : undefined;
  return {
    payload,
    payloadType: env[2]?.[0] ?? "",
    sig: sigs[0][1]?.[0] ?? new Uint8Array(),
    keyid: sigs[0][2]?.[0] ?? "",
    subject: event[3]?.[0] ?? "",
    keyId: event[6]?.[0] ?? "",
    verifierKey: registered,
  };
}

// Which (from type, relation, to type) triples Clew records (W3C PROV-O).
const PROV = new Set([
  "dataset wasAttributedTo site",
  "dataset-version specializationOf dataset",
  "dataset-version wasDerivedFrom dataset-version",
  "dataset-version wasGeneratedBy transform",
  "transform used dataset-version",
  "transform wasAssociatedWith principal",
  "training-run used dataset-version",
  "training-run wasAssociatedWith principal",
  "model-version wasGeneratedBy training-run",
  "validation used model-version",
  "validation used dataset-version",
  "validation wasAssociatedWith site",
  "deployment used model-version",
  "deployment wasAssociatedWith site",
  "deployment wasInformedBy validation",
]);

const typeOf = (s) => s.split("/")[0];
const idOf = (s) => s.slice(s.indexOf("/") + 1);

function contains(haystack, needle) {
  const n = utf8.encode(needle);
  outer: for (let i = 0; i + n.length <= haystack.length; i++) {
    for (let j = 0; j < n.length; j++) if (haystack[i + j] !== n[j]) continue outer;
    return true;
  }
  return false;
}

/**
 * Checks `doc` with the pinned key text. Returns every fact checked, in
 * order, each `{ fact, ok, why }`; the first failure ends the check, as in
 * `clew verify-answer`.
 */
export function verifyAnswer(doc, pinnedKeyText, pinnedWitnesses = { keys: [], quorum: 0 }) {
  const facts = [];
  const pass = (fact) => facts.push({ fact, ok: true });
  const fail = (fact, why) => {
    facts.push({ fact, ok: false, why });
    return facts;
  };
  if (doc.format !== FORMAT) return fail("format", `the answer's format is ${doc.format}, not ${FORMAT}`);
  let key;
  try {
    key = parseVerifierKey(pinnedKeyText);
  } catch (e) {
    return fail("pinned key", e.message);
  }
  let cp;
  try {
    cp = verifyCheckpoint(doc.checkpoint, key);
  } catch (e) {
    return fail("checkpoint signature", e.message);
  }
  pass(`checkpoint of tree size ${cp.size} signed by ${key.name}`);
  if (pinnedWitnesses.keys.length > 0) {
    let witnesses;
    try {
      witnesses = pinnedWitnesses.keys.map((k) => parseVerifierKey(k, 4));
    } catch (e) {
      return fail("pinned witnesses", e.message);
    }
    const { good, missing } = cosignedBy(cp, witnesses);
    for (const name of good) pass(`checkpoint cosigned by the witness ${name}`);
    const quorum = pinnedWitnesses.quorum || witnesses.length;
    if (good.length < quorum) {
      return fail(
        "witness quorum",
        `the checkpoint is cosigned by ${good.length} of the pinned witnesses, and the quorum is ${quorum} (no valid cosignature from ${missing.join(", ")})`,
      );
    }
  }

  const events = new Map();
  for (const e of doc.events) {
    const what = `leaf ${e.leafIndex}`;
    if (!(e.leafIndex < cp.size)) return fail(what, `it is beyond the checkpoint's ${cp.size} leaves`);
    let leaf;
    let path;
    try {
      leaf = b64(e.envelope, "the envelope");
      path = e.inclusionProof.map((h) => b64(h, "a proof hash"));
    } catch (err) {
      return fail(what, err.message);
    }
    if (path.some((h) => h.length !== 32)) return fail(what, "a proof hash is not 32 bytes");
    const root = rootFromInclusion(e.leafIndex, cp.size, leaf, path);
    if (!root || !equal(root, cp.root)) {
      return fail(`${what} inclusion`, "its inclusion proof does not lead to the checkpoint's root");
    }
    pass(`${what} is in the ledger (inclusion proof)`);
    let opened;
    try {
      opened = openEnvelope(leaf);
    } catch (err) {
      return fail(what, `the envelope cannot be read: ${err.message}`);
    }
    if (events.has(e.leafIndex)) return fail(what, "it is listed twice");
    events.set(e.leafIndex, opened);
  }

  const keys = new Map();
  for (const [i, o] of [...events].sort((a, b) => a[0] - b[0])) {
    if (o.verifierKey) {
      try {
        const k = parseVerifierKey(o.verifierKey);
        if (!keys.has(k.id)) keys.set(k.id, { at: i, key: k });
      } catch (err) {
        return fail(`key registered at leaf ${i}`, err.message);
      }
    }
  }
  for (const [i, o] of events) {
    const what = `leaf ${i} signature`;
    const k = keys.get(o.keyid);
    if (!k) return fail(what, `signed by key ${o.keyid}, whose registration is not in the answer`);
    if (k.at > i || (k.at === i && i !== 0)) {
      return fail(what, `signed by key ${o.keyid}, registered only at leaf ${k.at}`);
    }
    if (o.keyid !== o.keyId) return fail(what, `the signature's key ${o.keyid} is not the event's ${o.keyId}`);
    if (o.payloadType !== PAYLOAD_TYPE) return fail(what, `the payload type is ${o.payloadType}`);
    if (!ed25519Verify(o.sig, pae(o.payloadType, o.payload), k.key.pub)) {
      return fail(what, `the Ed25519 signature by ${o.keyid} does not verify`);
    }
    pass(`leaf ${i} signed by ${o.keyid}`);
  }

  const subjects = new Set();
  for (const n of doc.nodes) {
    const o = events.get(n.leafIndex);
    const what = `node ${n.subject}`;
    if (!o) return fail(what, `it cites leaf ${n.leafIndex}, which is not in the answer`);
    if (o.subject !== n.subject) return fail(what, `it cites leaf ${n.leafIndex}, which is about ${o.subject}`);
    if (subjects.has(n.subject)) return fail(what, "it is listed twice");
    subjects.add(n.subject);
    pass(`${what} recorded at leaf ${n.leafIndex}`);
  }
  const start = doc.query?.subject;
  if (start && !subjects.has(start)) return fail("the start", `${start} is not among the nodes`);
  for (const e of doc.edges) {
    const what = `edge ${e.from} ${e.relation} ${e.to}`;
    for (const end of [e.from, e.to]) {
      if (!subjects.has(end)) return fail(what, `${end} is not among the nodes`);
    }
    if (!PROV.has(`${typeOf(e.from)} ${e.relation} ${typeOf(e.to)}`)) {
      return fail(what, "not a relation Clew records between these types");
    }
    const o = events.get(e.leafIndex);
    if (!o) return fail(what, `it cites leaf ${e.leafIndex}, which is not in the answer`);
    const other = o.subject === e.from ? e.to : o.subject === e.to ? e.from : null;
    if (!other) return fail(what, `it cites leaf ${e.leafIndex}, which is about ${o.subject}`);
    if (!contains(o.payload, idOf(other)) && !contains(o.payload, other)) {
      return fail(what, `leaf ${e.leafIndex} does not name ${other}`);
    }
    pass(`${what} recorded at leaf ${e.leafIndex}`);
  }
  return facts;
}

/** A list item saying one fact, as text. */
function factItem(f) {
  const li = document.createElement("li");
  li.className = f.ok ? "verified" : "failed";
  li.dataset.fact = f.ok ? "verified" : "failed";
  li.textContent = f.ok ? `\u2713 ${f.fact}` : `\u2717 ${f.fact}: ${f.why}`;
  return li;
}

async function runPanel(panel) {
  const status = panel.querySelector("[data-evidence-status]");
  const list = panel.querySelector("[data-evidence-facts]");
  list.replaceChildren();
  const pinned = localStorage.getItem(PINNED);
  if (!pinned) {
    status.textContent =
      "No ledger key is pinned in this browser: pin the key your operator gave you on the Ledger page first.";
    panel.dataset.outcome = "no-key";
    return;
  }
  status.textContent = "Fetching the answer with its proofs\u2026";
  let doc;
  try {
    const r = await fetch(panel.dataset.evidence, { credentials: "same-origin" });
    if (!r.ok) throw new Error(`the server answered ${r.status}`);
    doc = await r.json();
  } catch (e) {
    status.textContent = `The evidence could not be fetched: ${e.message}`;
    panel.dataset.outcome = "unavailable";
    return;
  }
  let witnesses = { keys: [], quorum: 0 };
  try {
    witnesses = JSON.parse(localStorage.getItem(PINNED_WITNESSES) || "null") ?? witnesses;
  } catch {
    // Nothing usable pinned: no witness check.
  }
  const facts = verifyAnswer(doc, pinned, witnesses);
  const failed = facts.find((f) => !f.ok);
  for (const f of facts) list.append(factItem(f));
  if (failed) {
    status.textContent = `Not verified \u2014 ${failed.fact}: ${failed.why}`;
    status.setAttribute("role", "alert");
    panel.dataset.outcome = "failed";
  } else {
    const verified = facts.length;
    const cosigned = witnesses.keys.length > 0 ? ", its witnesses' cosignatures" : "";
    status.textContent = `Verified in this browser: ${verified} facts \u2014 the checkpoint's signature${cosigned}, every event's inclusion and signature, every node and edge.`;
    panel.dataset.outcome = "verified";
  }
}

const pageDocument = typeof document === "undefined" ? null : document;

for (const panel of pageDocument?.querySelectorAll("[data-evidence]") ?? []) {
  panel.querySelector("[data-verify]")?.addEventListener("click", () => runPanel(panel));
}

// The ledger page: pin the key shown, or one given out of band; forget it.
for (const pin of pageDocument?.querySelectorAll("[data-pin]") ?? []) {
  const shown = pin.querySelector("[data-pin-status]");
  const say = () => {
    const k = localStorage.getItem(PINNED);
    shown.textContent = k ? `Pinned in this browser: ${k}` : "No key is pinned in this browser.";
  };
  const keep = (text) => {
    try {
      parseVerifierKey(text);
      localStorage.setItem(PINNED, text.trim());
      say();
    } catch (e) {
      shown.textContent = `Not pinned: ${e.message}`;
    }
  };
  pin.querySelector("[data-pin-shown]")?.addEventListener("click", () => keep(pin.dataset.vkey));
  pin.querySelector("[data-pin-given]")?.addEventListener("click", () =>
    keep(pin.querySelector("textarea").value),
  );
  pin.querySelector("[data-pin-forget]")?.addEventListener("click", () => {
    localStorage.removeItem(PINNED);
    say();
  });
  const witnessStatus = pin.querySelector("[data-witness-status]");
  const sayWitnesses = () => {
    const w = JSON.parse(localStorage.getItem(PINNED_WITNESSES) || "null");
    witnessStatus.textContent = w
      ? `Pinned: ${w.keys.length} witnesses, quorum ${w.quorum}.`
      : "No witness is pinned: the panels check the ledger's signature only.";
  };
  pin.querySelector("[data-pin-witnesses]")?.addEventListener("click", () => {
    const keys = pin
      .querySelector("#witness-keys")
      .value.split("\n")
      .map((l) => l.trim())
      .filter((l) => l);
    const quorum = Number(pin.querySelector("#witness-quorum").value || keys.length);
    try {
      keys.forEach((k) => parseVerifierKey(k, 4));
      if (!Number.isInteger(quorum) || quorum < 1 || quorum > keys.length) {
        throw new Error(`the quorum must be a whole number from 1 to ${keys.length}`);
      }
      if (keys.length === 0) localStorage.removeItem(PINNED_WITNESSES);
      else localStorage.setItem(PINNED_WITNESSES, JSON.stringify({ keys, quorum }));
      sayWitnesses();
    } catch (e) {
      witnessStatus.textContent = `Not pinned: ${e.message}`;
    }
  });
  say();
  sayWitnesses();
}
