// Command goverifier checks a Clew ledger mirror with Go's own transparency-log
// code (golang.org/x/mod/sumdb/note and sumdb/tlog), which Clew did not write.
//
// It reads a directory written by `clew tiles export` plus receipts and
// consistency proofs — or, with -url, first mirrors a running Clew server's
// log over HTTP into that directory (the signed checkpoint, every hash tile
// and entry bundle, full and partial, as C2SP tlog-tiles; receipts of a spread
// of leaves as C2SP tlog-proof) — and checks:
//   - every checkpoint's signed-note signature with the ledger's verifier key;
//   - every entry of every entry bundle, by re-deriving its inclusion proof from
//     the hash tiles (tlog.TileHashReader authenticates each tile against the
//     signed tree head) and checking it with tlog.CheckRecord;
//   - every receipt (C2SP tlog-proof) with tlog.CheckRecord on Clew's proof;
//   - every consistency proof with tlog.CheckTree on Clew's proof.
//
// It exits non-zero on the first failure.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type checkpoint struct {
	origin string
	tree   tlog.Tree
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// openCheckpoint verifies a signed note and parses its C2SP tlog-checkpoint body.
func openCheckpoint(data []byte, verifier note.Verifier) checkpoint {
	n, err := note.Open(data, note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		fail("checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size %q: %v", lines[1], err)
	}
	h, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root %q: %v", lines[2], err)
	}
	if lines[0] != verifier.Name() {
		fail("checkpoint origin %q is not the key name %q", lines[0], verifier.Name())
	}
	return checkpoint{origin: lines[0], tree: tlog.Tree{N: size, Hash: h}}
}

// tilePath is the c2sp.org/tlog-tiles path of a tile (no height element;
// "entries" for data tiles).
func tilePath(t tlog.Tile) string {
	n := t.N
	p := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		p = fmt.Sprintf("x%03d/%s", n%1000, p)
	}
	level := strconv.Itoa(t.L)
	if t.L == -1 {
		level = "entries"
	}
	suffix := ""
	if t.W != 1<<t.H {
		suffix = fmt.Sprintf(".p/%d", t.W)
	}
	return "tile/" + level + "/" + p + suffix
}

type dirTiles struct{ dir string }

func (d dirTiles) Height() int { return 8 }
func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := os.ReadFile(filepath.Join(d.dir, tilePath(t)))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}
func (d dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func readProofLines(lines []string) tlog.RecordProof {
	var p tlog.RecordProof
	for _, l := range lines {
		if l == "" {
			continue
		}
		h, err := tlog.ParseHash(l)
		if err != nil {
			fail("proof hash %q: %v", l, err)
		}
		p = append(p, h)
	}
	return p
}

// mirror downloads a served log into dir: checkpoint, every tile
// (c2sp.org/tlog-tiles) and receipts of about `receipts` leaves.
func mirror(base, token, dir string, receipts int64, verifier note.Verifier) (tiles, bundles, proofs int) {
	get := func(path string) []byte {
		req, err := http.NewRequest("GET", strings.TrimSuffix(base, "/")+"/"+path, nil)
		if err != nil {
			fail("%v", err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fail("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			fail("GET %s: %v", path, err)
		}
		if resp.StatusCode != http.StatusOK {
			fail("GET %s: %s: %s", path, resp.Status, body)
		}
		return body
	}
	save := func(path string, data []byte) {
		full := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			fail("%v", err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			fail("%v", err)
		}
	}
	cpBytes := get("checkpoint")
	n := openCheckpoint(cpBytes, verifier).tree.N
	save("checkpoint", cpBytes)
	// Every hash tile a tree of this size has, at every level, partial ones included.
	for _, t := range tlog.NewTiles(8, 0, n) {
		save(tilePath(t), get(tilePath(t)))
		tiles++
	}
	for bundle := int64(0); bundle*256 < n; bundle++ {
		w := n - bundle*256
		if w > 256 {
			w = 256
		}
		t := tlog.Tile{H: 8, L: -1, N: bundle, W: int(w)}
		save(tilePath(t), get(tilePath(t)))
		bundles++
	}
	if receipts > 0 && n > 0 {
		step := n / receipts
		if step == 0 {
			step = 1
		}
		for i := int64(0); i < n; i += step {
			save(fmt.Sprintf("receipts/%d.tlog-proof", i), get(fmt.Sprintf("receipt/%d", i)))
			proofs++
		}
		if (n-1)%step != 0 {
			save(fmt.Sprintf("receipts/%d.tlog-proof", n-1), get(fmt.Sprintf("receipt/%d", n-1)))
			proofs++
		}
	}
	return
}

func main() {
	vkey := flag.String("vkey", "", "ledger verifier key (C2SP signed-note format)")
	dir := flag.String("dir", "", "mirror directory written by `clew tiles export` (or by -url)")
	url := flag.String("url", "", "a running Clew server to mirror into -dir first")
	token := flag.String("token", "", "bearer token for -url (entry bundles need governance or admin)")
	sample := flag.Int64("receipts", 50, "with -url: receipts to fetch, spread over the log")
	flag.Parse()
	verifier, err := note.NewVerifier(strings.TrimSpace(*vkey))
	if err != nil {
		fail("verifier key: %v", err)
	}
	if *url != "" {
		tiles, bundles, proofs := mirror(*url, *token, *dir, *sample, verifier)
		fmt.Printf("mirrored %d hash tiles, %d entry bundles, %d receipts from %s\n", tiles, bundles, proofs, *url)
	}

	// Checkpoints.
	latestBytes, err := os.ReadFile(filepath.Join(*dir, "checkpoint"))
	if err != nil {
		fail("%v", err)
	}
	latest := openCheckpoint(latestBytes, verifier)
	history := map[int64]tlog.Tree{}
	entries, _ := os.ReadDir(filepath.Join(*dir, "checkpoints"))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(*dir, "checkpoints", e.Name()))
		if err != nil {
			fail("%v", err)
		}
		cp := openCheckpoint(b, verifier)
		if strconv.FormatInt(cp.tree.N, 10) != e.Name() {
			fail("checkpoints/%s holds size %d", e.Name(), cp.tree.N)
		}
		history[cp.tree.N] = cp.tree
	}

	// Every entry, through tiles authenticated against the latest checkpoint.
	reader := tlog.TileHashReader(latest.tree, dirTiles{*dir})
	var index int64
	for bundle := int64(0); index < latest.tree.N; bundle++ {
		w := latest.tree.N - bundle*256
		if w > 256 {
			w = 256
		}
		data, err := os.ReadFile(filepath.Join(*dir, tilePath(tlog.Tile{H: 8, L: -1, N: bundle, W: int(w)})))
		if err != nil {
			fail("entry bundle %d: %v", bundle, err)
		}
		for len(data) > 0 {
			if len(data) < 2 {
				fail("entry bundle %d is truncated", bundle)
			}
			n := int(binary.BigEndian.Uint16(data))
			entry := data[2 : 2+n]
			data = data[2+n:]
			proof, err := tlog.ProveRecord(latest.tree.N, index, reader)
			if err != nil {
				fail("proving entry %d from tiles: %v", index, err)
			}
			if err := tlog.CheckRecord(proof, latest.tree.N, latest.tree.Hash, index, tlog.RecordHash(entry)); err != nil {
				fail("entry %d: %v", index, err)
			}
			index++
		}
	}
	if index != latest.tree.N {
		fail("bundles hold %d entries, checkpoint says %d", index, latest.tree.N)
	}

	// Every historical checkpoint's root, recomputed from the tiles.
	for size, tree := range history {
		h, err := tlog.TreeHash(size, reader)
		if err != nil {
			fail("tree hash at %d: %v", size, err)
		}
		if h != tree.Hash {
			fail("checkpoint at size %d does not match the tiles", size)
		}
	}

	// Receipts (c2sp.org/tlog-proof) with Clew's own inclusion proofs.
	receipts, _ := filepath.Glob(filepath.Join(*dir, "receipts", "*.tlog-proof"))
	for _, path := range receipts {
		b, err := os.ReadFile(path)
		if err != nil {
			fail("%v", err)
		}
		head, cpText, ok := bytes.Cut(b, []byte("\n\n"))
		if !ok {
			fail("%s: no checkpoint", path)
		}
		cp := openCheckpoint(cpText, verifier)
		sc := bufio.NewScanner(bytes.NewReader(head))
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if len(lines) < 3 || lines[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(lines[1], "extra ") || !strings.HasPrefix(lines[2], "index ") {
			fail("%s: not a tlog-proof with extra and index lines", path)
		}
		leaf, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
		if err != nil {
			fail("%s: extra: %v", path, err)
		}
		idx, err := strconv.ParseInt(strings.TrimPrefix(lines[2], "index "), 10, 64)
		if err != nil {
			fail("%s: index: %v", path, err)
		}
		proof := readProofLines(lines[3:])
		if err := tlog.CheckRecord(proof, cp.tree.N, cp.tree.Hash, idx, tlog.RecordHash(leaf)); err != nil {
			fail("%s: %v", path, err)
		}
	}

	// Consistency proofs produced by Clew, between stored checkpoints.
	consistency, _ := filepath.Glob(filepath.Join(*dir, "consistency", "*"))
	sort.Strings(consistency)
	for _, path := range consistency {
		var oldN, newN int64
		if _, err := fmt.Sscanf(filepath.Base(path), "%d-%d", &oldN, &newN); err != nil {
			fail("%s: name is not <old>-<new>", path)
		}
		oldT, ok1 := history[oldN]
		newT, ok2 := history[newN]
		if !ok1 || !ok2 {
			fail("%s: no checkpoint for one of the sizes", path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			fail("%v", err)
		}
		proof := tlog.TreeProof(readProofLines(strings.Split(string(b), "\n")))
		if err := tlog.CheckTree(proof, newN, newT.Hash, oldN, oldT.Hash); err != nil {
			fail("%s: %v", path, err)
		}
	}
	fmt.Printf("ok: %d entries via tiles, %d checkpoints, %d receipts, %d consistency proofs verified\n",
		latest.tree.N, len(history), len(receipts), len(consistency))
}
