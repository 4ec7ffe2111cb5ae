package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/walsync/walsync/storage"
)

// where names a database of a replica for messages: its URL.
func where(c storage.Client, db string) string {
	if db == "" {
		return c.URL()
	}
	return strings.TrimSuffix(c.URL(), "/") + "/" + db
}

// ErrNoBackup matches the error of a restore from a URL that holds no
// backup of a database.
var ErrNoBackup = errors.New("no backup")

// noBackup says there is no backup at db's URL and, when that URL is a
// replica root holding databases, how to restore one of them.
func noBackup(ctx context.Context, c storage.Client, db string) error {
	if dl, ok := c.(storage.DatabaseLister); ok {
		if dbs, err := dl.Databases(ctx); err == nil && len(dbs) > 0 && db == "" {
			ex := dbs[0]
			return fmt.Errorf("%w at %s: it is a replica root holding %d databases (walsync ls %s lists them); restore one by its URL, e.g. %s/%s",
				ErrNoBackup, c.URL(), len(dbs), c.URL(), strings.TrimSuffix(c.URL(), "/"), ex)
		}
	}
	return fmt.Errorf("%w at %s", ErrNoBackup, where(c, db))
}
