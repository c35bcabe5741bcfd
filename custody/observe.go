package custody

// Observer is told, after the fact, of what the service released and
// decided, for metrics (package metrics implements it). It learns the RPC
// method and the outcome only: never a wallet, an app or a user.
type Observer interface {
	// Signature is called once a signature for method ("personal_sign",
	// "raw_sign", ...) has committed with its audit record.
	Signature(method string)
	// PolicyDecision is called for each final policy decision on a
	// signature or an export: allowed once the release committed, denied
	// once the denial is in the audit log.
	PolicyDecision(allowed bool)
}

type noObserver struct{}

func (noObserver) Signature(string)    {}
func (noObserver) PolicyDecision(bool) {}

func (s *Service) observer() Observer {
	if s.opts.Observer == nil {
		return noObserver{}
	}
	return s.opts.Observer
}

// released counts a signature released for method, which its policy
// allowed.
func (s *Service) released(method string) {
	s.observer().Signature(method)
	s.observer().PolicyDecision(true)
}
