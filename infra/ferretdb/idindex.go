package main

// FerretDB 1.24's SQLite backend finds documents by _id with the SQL expression
// _ferretdb_sjson->'$._id', but indexes _id as _ferretdb_sjson->"_id". SQLite uses an
// expression index only for the same expression, so every find, update and delete by _id
// scans the whole table. On a table of 16,000 documents of 3 KB that took 0.1 s per
// statement, and a consumer that updated a few hundred documents per batch waited minutes.
//
// indexIDPaths adds, next to FerretDB's own index, an index on the expression that its
// queries use, to every collection table of every database in the data directory. It
// runs until ctx ends, looking for new tables every interval. FerretDB does not know this
// index, so listIndexes does not show it; dropping the collection drops the table and
// the index with it.

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver that FerretDB uses too
)

// idIndexSuffix ends the name of the added index of each table.
const idIndexSuffix = "__id_path"

// indexIDPaths adds the _id path index to new tables every interval until ctx ends.
func indexIDPaths(ctx context.Context, dataDir string, interval time.Duration, logger *slog.Logger) {
	indexed := map[string]bool{}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	for {
		files, err := filepath.Glob(filepath.Join(dataDir, "*.sqlite"))
		if err != nil {
			logger.Warn("listing the SQLite files for _id indexes failed", "error", err)
		}

		for _, file := range files {
			if err := indexFile(ctx, file, indexed); err != nil {
				logger.Debug("adding _id path indexes failed, retrying later", "file", file, "error", err)
			}
		}

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// indexFile adds the _id path index to the tables of one database file not indexed yet.
func indexFile(ctx context.Context, file string, indexed map[string]bool) error {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()

	// FerretDB creates this table with the first collection of a database.
	rows, err := db.QueryContext(ctx, "SELECT table_name FROM _ferretdb_collections")
	if err != nil {
		return err
	}

	var tables []string

	for rows.Next() {
		var table string
		if err = rows.Scan(&table); err != nil {
			rows.Close()
			return err
		}

		if !indexed[file+"\x00"+table] {
			tables = append(tables, table)
		}
	}

	rows.Close()

	if err = rows.Err(); err != nil {
		return err
	}

	for _, table := range tables {
		quoted := `"` + strings.ReplaceAll(table, `"`, `""`) + `"`
		index := `"` + strings.ReplaceAll(table+idIndexSuffix, `"`, `""`) + `"`
		statement := fmt.Sprintf(
			"CREATE INDEX IF NOT EXISTS %s ON %s (_ferretdb_sjson->'$._id')", index, quoted,
		)

		if _, err = db.ExecContext(ctx, statement); err != nil {
			return fmt.Errorf("table %s: %w", table, err)
		}

		indexed[file+"\x00"+table] = true
	}

	return nil
}
