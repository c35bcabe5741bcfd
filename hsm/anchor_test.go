package hsm_test

import (
	"testing"

	"github.com/cachet-custody/cachet/keys/keystest"
)

// The audit record's anchor in a SoftHSM token data object.
func TestAnchor(t *testing.T) { keystest.RunAnchor(t, softHSM{1}) }
