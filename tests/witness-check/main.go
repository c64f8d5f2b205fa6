// witnesscheck verifies a witnessed checkpoint with code Clew did not write:
// golang.org/x/mod/sumdb/note for the signed note and the log's Ed25519 key,
// github.com/transparency-dev/formats/note for C2SP tlog-cosignature
// (cosignature/v1) witness keys. It exits non-zero unless the log's
// signature and at least -quorum of the witnesses' cosignatures verify, and
// prints each verified cosignature's witness and time.
//
// usage: witnesscheck -log <vkey> -witness <vkey> [-witness <vkey>...] [-quorum N] <checkpoint file>
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

type keys []string

func (k *keys) String() string     { return strings.Join(*k, ",") }
func (k *keys) Set(v string) error { *k = append(*k, v); return nil }

func main() {
	logKey := flag.String("log", "", "the log's verifier key (signed-note Ed25519)")
	var witnesses keys
	flag.Var(&witnesses, "witness", "a witness's verifier key (cosignature/v1), repeatable")
	quorum := flag.Int("quorum", 1, "cosignatures required")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: witnesscheck -log <vkey> -witness <vkey>... [-quorum N] <checkpoint file>")
		os.Exit(2)
	}
	msg, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail("%v", err)
	}
	logV, err := note.NewVerifier(strings.TrimSpace(*logKey))
	if err != nil {
		fail("log key: %v", err)
	}
	verifiers := []note.Verifier{logV}
	for _, w := range witnesses {
		v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(w))
		if err != nil {
			fail("witness key %q: %v", w, err)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fail("opening the note: %v", err)
	}
	logSigned, cosigned := false, 0
	for _, s := range n.Sigs {
		if s.Name == logV.Name() && s.Hash == logV.KeyHash() {
			logSigned = true
			continue
		}
		t, err := fnote.CoSigV1Timestamp(s)
		if err != nil {
			fail("cosignature of %s: %v", s.Name, err)
		}
		cosigned++
		fmt.Printf("cosigned by %s at %d\n", s.Name, t.Unix())
	}
	if !logSigned {
		fail("the log's own signature is missing")
	}
	if cosigned < *quorum {
		fail("%d of the %d cosignatures required verify", cosigned, *quorum)
	}
	fmt.Printf("ok: %q signed by the log and %d witnesses\n", strings.SplitN(n.Text, "\n", 2)[0], cosigned)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "witnesscheck: "+format+"\n", args...)
	os.Exit(1)
}
