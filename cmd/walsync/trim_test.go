package main

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// binaryRSS is the resident size, in kB, of this process's mappings of its
// own executable's code and read-only data.
func binaryRSS(t *testing.T) int {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kb, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-"):
			in = len(fields) >= 6 && fields[5] == exe && !strings.Contains(fields[1], "w")
		case in && len(fields) == 3 && fields[0] == "Rss:":
			n, _ := strconv.Atoi(fields[1])
			kb += n
		}
	}
	return kb
}

// TestTrimBinaryPages: the binary's pages leave the resident set, and the
// process goes on running (what it uses comes back).
func TestTrimBinaryPages(t *testing.T) {
	before := binaryRSS(t)
	n, err := trimBinaryPages()
	if err != nil || n == 0 {
		t.Fatalf("trimBinaryPages = %d, %v", n, err)
	}
	after := binaryRSS(t)
	if before == 0 || after >= before {
		t.Fatalf("binary's resident pages %d kB before, %d kB after: nothing released", before, after)
	}
	t.Logf("binary's resident pages: %d kB before, %d kB after", before, after)
}
