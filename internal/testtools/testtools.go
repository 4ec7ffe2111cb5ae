// Package testtools builds the pinned third-party programs the tests run
// (versitygw, Litestream) from the Go module proxy, once, into the user
// cache directory.
package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

var (
	mu    sync.Mutex
	built = map[string]string{}
)

// Install returns the path of the binary of module@version (for example
// github.com/versity/versitygw/cmd/versitygw@v1.8.0), building it with
// `go install` the first time.
func Install(moduleAtVersion string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[moduleAtVersion]; ok {
		return p, nil
	}
	pkg, version, ok := strings.Cut(moduleAtVersion, "@")
	if !ok {
		return "", fmt.Errorf("%s: no version", moduleAtVersion)
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	name := path.Base(pkg)
	dir = filepath.Join(dir, "walsync-tools", name+"-"+version)
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err != nil {
		cmd := exec.Command("go", "install", moduleAtVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go install %s: %v\n%s", moduleAtVersion, err, out)
		}
	}
	built[moduleAtVersion] = bin
	return bin, nil
}
