// Command ferretdb runs FerretDB v1, a MongoDB wire-protocol server, with its SQLite
// backend, by default on the loopback interface, for local development and tests.
//
// It embeds the github.com/FerretDB/FerretDB/ferretdb package instead of building
// FerretDB's own command, because `go install .../cmd/ferretdb@v1.24.2` panics at start-up
// without the version file that only FerretDB's release build writes. The embedded server
// never sends telemetry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// idIndexInterval is how often new collection tables get the _id path index (see idindex.go).
const idIndexInterval = time.Second

// resolvePort returns the -port flag when it is set, else LOCAL_MONGO_PORT, else 27017.
func resolvePort(flagPort int) (int, error) {
	port, source := flagPort, "-port"

	if port == 0 {
		value := os.Getenv("LOCAL_MONGO_PORT")
		if value == "" {
			return 27017, nil
		}

		parsed, err := strconv.Atoi(value)
		if err != nil {
			return 0, fmt.Errorf(
				"invalid port %q in LOCAL_MONGO_PORT: use a number from 1 to 65535", value,
			)
		}

		port, source = parsed, "LOCAL_MONGO_PORT"
	}

	if port < 1 || port > 65535 {
		return 0, fmt.Errorf("invalid port %d in %s: use a number from 1 to 65535", port, source)
	}

	return port, nil
}

func run() error {
	host := flag.String("host", "127.0.0.1", "IP address to listen on")
	portFlag := flag.Int("port", 0, "TCP port to listen on (default: LOCAL_MONGO_PORT or 27017)")
	dataDir := flag.String("data-dir", "data", "directory for the SQLite files, one per database; created if missing")
	debug := flag.Bool("debug", false, "log at debug level")
	flag.Parse()

	port, err := resolvePort(*portFlag)
	if err != nil {
		return err
	}

	absDataDir, err := filepath.Abs(*dataDir)
	if err != nil {
		return fmt.Errorf("invalid -data-dir %q: %w", *dataDir, err)
	}

	// The SQLite backend requires an existing directory.
	if err = os.MkdirAll(absDataDir, 0o755); err != nil {
		return fmt.Errorf("cannot create data directory %q: %w", absDataDir, err)
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	listenAddr := net.JoinHostPort(*host, strconv.Itoa(port))

	server, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listenAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + absDataDir + "/",
	})
	if err != nil {
		return fmt.Errorf("cannot start FerretDB on %s: %w", listenAddr, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	logger.Info("FerretDB started", "listen_addr", listenAddr, "data_dir", absDataDir, "pid", os.Getpid())

	go indexIDPaths(ctx, absDataDir, idIndexInterval, logger)

	if err = server.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("FerretDB stopped with an error: %w", err)
	}

	logger.Info("FerretDB stopped", "listen_addr", listenAddr)

	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb: "+err.Error())
		os.Exit(1)
	}
}
