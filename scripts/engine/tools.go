//go:build tools

// Package engine records the main packages built by scripts/setup.sh, so that
// `go mod tidy` keeps their dependencies in go.sum. It is never compiled.
package engine

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
