// Command hub runs and manages an edgehub server; see `hub help`.
package main

import (
	"os"

	"github.com/edgehub/edgehub/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
