package tpm

import (
	"testing"

	"github.com/cachet-custody/cachet/internal/testhw"
	"github.com/cachet-custody/cachet/keys/keystest"
)

// The audit record's anchor in an NV index of swtpm.
func TestAnchor(t *testing.T) { keystest.RunAnchor(t, swtpm{testhw.StartSwtpm}) }
