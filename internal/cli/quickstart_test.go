package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/plugintest"
)

// TestQuickstart runs docs/quickstart.md up to its federation section as
// TestReadmeTour runs the README's tour: every "$ " command of its
// ```console blocks, against a fresh `hub serve`, output compared exactly.
// The federation section needs the example configs' fixed ports, which
// other tests on the machine may hold, so it is not run here.
func TestQuickstart(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(plugintest.ModuleRoot(t), "docs", "quickstart.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc, _, ok := strings.Cut(string(b), "\n## Federation\n")
	if !ok {
		t.Fatal(`docs/quickstart.md has no "## Federation" section`)
	}
	// parseTour reads the "## CLI tour" section: make the whole page that
	// section, keeping every line where it is so line numbers stay true.
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "## ") {
			lines[i] = "#" + l
		}
	}
	lines[0] = "## CLI tour"
	steps, err := parseTour(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) < 6 {
		t.Fatalf("docs/quickstart.md: %d commands in ```console blocks before Federation, want at least 6", len(steps))
	}
	runTour(t, "docs/quickstart.md", steps)
}
