package custody

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ethereum/go-ethereum/common"

	"github.com/cachet-custody/cachet/audit"
	"github.com/cachet-custody/cachet/keys"
	"github.com/cachet-custody/cachet/policy"
	"github.com/cachet-custody/cachet/quorum"
	"github.com/cachet-custody/cachet/store"
	"github.com/cachet-custody/cachet/wallet"
)

// principal is who a signing request acts as.
type principal struct {
	owner  bool
	signer *Signer // the additional signer, when not the owner
	app    bool    // a wallet without owner, managed by the app alone
	// quorums are the key quorums whose members approved: the principal's
	// quorum and its children, with their versions as read when the
	// signatures were checked against them.
	quorums  []string
	versions map[string]int64
	// userKeys are the user keys that may have approved; they must still be
	// live when the release commits.
	userKeys []string
}

// state is the authorization a request was checked against, in authState's
// form: the wallet's version and the approving quorums' versions, all as
// they were read for the check (not read again after it, when a change
// could already have committed).
func (p principal) state(w *storedWallet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "w%d", w.version)
	for _, id := range p.quorums {
		fmt.Fprintf(&b, ";%s:%d", id, p.versions[id])
	}
	return b.String()
}

func (p principal) String() string {
	switch {
	case p.app:
		return "app (wallet has no owner)"
	case p.owner:
		return "owner"
	default:
		return "additional signer " + p.signer.SignerID
	}
}

// policies returns the policies that govern a principal's request: the
// signer's override policy alone when it has one, else the wallet's.
func (p principal) policies(w *storedWallet) []string {
	if p.signer != nil && len(p.signer.OverridePolicyIDs) > 0 {
		return p.signer.OverridePolicyIDs
	}
	return w.PolicyIDs
}

// signingPrincipal finds who may sign: the owner quorum, or else an
// additional signer whose quorum the signatures satisfy. A wallet without
// owner may be used with the app's credentials alone.
func (s *Service) signingPrincipal(ctx context.Context, q querier, app string, w *storedWallet, sg *Signed) (principal, error) {
	if w.OwnerID == nil {
		return principal{app: true}, nil
	}
	if sg == nil || len(sg.Sigs) == 0 {
		return principal{}, errorf(Unauthorized, "Wallet %s has an owner: the request needs privy-authorization-signature from its owner or an additional signer.", w.ID)
	}
	if len(w.AdditionalSigners) > MaxAdditionalSigners {
		// Only a wallet stored before the limit existed can have more.
		return principal{}, errorf(Conflict, "Wallet %s has %d additional signers, over the limit of %d; its owner must remove some before it signs again.", w.ID, len(w.AdditionalSigners), MaxAdditionalSigners)
	}
	var firstErr error
	var ids []string
	var versions map[string]int64
	var userKeys []string
	try := func(id string) (bool, error) {
		sq, err := s.loadQuorum(ctx, q, app, id)
		if err != nil {
			return false, err
		}
		versions = map[string]int64{}
		vq, err := s.verifier(ctx, q, app, sq, versions)
		if err != nil {
			return false, err
		}
		ok, used, err := s.approved(ctx, q, app, vq, sg)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		userKeys = used
		ids = []string{vq.ID}
		for _, c := range vq.Children {
			ids = append(ids, c.ID)
		}
		return ok && err == nil, nil
	}
	if ok, err := try(*w.OwnerID); err != nil {
		return principal{}, err
	} else if ok {
		return principal{owner: true, quorums: ids, versions: versions, userKeys: userKeys}, nil
	}
	for i := range w.AdditionalSigners {
		if ok, err := try(w.AdditionalSigners[i].SignerID); err != nil {
			return principal{}, err
		} else if ok {
			return principal{signer: &w.AdditionalSigners[i], quorums: ids, versions: versions, userKeys: userKeys}, nil
		}
	}
	var ae *quorum.AuthError
	var ce *Error
	if errors.As(firstErr, &ce) {
		return principal{}, ce
	}
	if errors.As(firstErr, &ae) {
		return principal{}, errorf(Unauthorized, "Invalid authorization signature: %s.", ae.Reason)
	}
	return principal{}, errorf(Unauthorized, "The authorization signatures satisfy neither the owner of wallet %s nor any of its additional signers.", w.ID)
}

// authState identifies the authorization a request was checked against: the
// wallet's version and those of the quorums that approved. Every change of
// owner, signers, policies, archive state or quorum members bumps one.
func authState(ctx context.Context, q querier, walletID string, quorums []string) (string, error) {
	var b strings.Builder
	var v int64
	if err := q.QueryRowContext(ctx, `SELECT version FROM wallets WHERE id = ?`, walletID).Scan(&v); err != nil {
		return "", fmt.Errorf("read wallet %s version: %w", walletID, err)
	}
	fmt.Fprintf(&b, "w%d", v)
	for _, id := range quorums {
		if err := q.QueryRowContext(ctx, `SELECT version FROM key_quorums WHERE id = ?`, id).Scan(&v); err != nil {
			return "", fmt.Errorf("read key quorum %s version: %w", id, err)
		}
		fmt.Fprintf(&b, ";%s:%d", id, v)
	}
	return b.String(), nil
}

// unchanged refuses to release a signature when the wallet or the quorums
// that approved it changed after the check (an archive, a new owner, a
// removed signer, new quorum members committed meanwhile).
func unchanged(ctx context.Context, tx *store.Tx, walletID string, quorums []string, want string) error {
	got, err := authState(ctx, txq{tx}, walletID, quorums)
	if err != nil {
		return err
	}
	if got != want {
		return errorf(Conflict, "Wallet %s or the key quorum that approved this request changed while it was being signed; nothing was signed. Send the request again.", walletID)
	}
	return nil
}

// RPC is POST /v1/wallets/{id}/rpc (raw=false) and /raw_sign (raw=true).
func (s *Service) RPC(ctx context.Context, c Call, id string, body []byte, raw bool) (json.RawMessage, error) {
	// Gate 1: a live wallet of this app.
	w, err := loadStoredWallet(ctx, s.st, c.App, id)
	if err != nil {
		return nil, err
	}
	if w.ArchivedAt != nil {
		return nil, errorf(Invalid, "Wallet %s is archived and cannot sign.", id)
	}
	// Gate 2: a well-formed request.
	var req *wallet.Request
	if raw {
		req, err = wallet.ParseRawSign(body)
	} else {
		req, err = wallet.ParseRPC(body)
	}
	if err != nil {
		return nil, inputError(err)
	}
	if req.WalletID != "" && req.WalletID != id {
		return nil, errorf(Invalid, "wallet_id: names another wallet than the path (%s).", id)
	}
	// Gate 3: the owner, an additional signer, or the app for a wallet
	// without owner.
	p, err := s.signingPrincipal(ctx, s.st, c.App, w, c.Signed)
	if err != nil {
		return nil, err
	}
	// A retry under an idempotency key gets the stored response only once
	// it has passed the same authorization as the original.
	if out, ok, err := s.Replayed(ctx, c); err != nil || ok {
		return out, err
	}
	state := p.state(w)
	s.authorized()
	// Gate 4: the policies that govern that principal. An engine error
	// refuses: fail closed.
	pin := policy.Input{AppID: c.App, WalletID: id, PolicyIDs: p.policies(w), Request: req}
	dec, err := s.policy.Evaluate(ctx, pin)
	if err != nil {
		return nil, fmt.Errorf("policy evaluation for wallet %s: %w", id, err)
	}
	if !dec.Allowed {
		return nil, s.policyDenied(ctx, c, "wallet.rpc", id, req.Method, p, dec)
	}
	// Gate 5: a complete transaction. eth_sendTransaction always asks the
	// chain's node (which also checks the chain id); eth_signTransaction
	// asks it only for the fields the request left out.
	node, hasNode := s.opts.Chains(chainOf(req))
	switch {
	case req.Method == wallet.MethodSendTransaction && !hasNode:
		return nil, errorf(Invalid, "caip2: no JSON-RPC endpoint is configured for %q, so eth_sendTransaction cannot broadcast (see [[chains]] in the config).", chainOf(req))
	case req.Method == wallet.MethodSendTransaction,
		req.Tx != nil && len(req.Tx.Missing()) > 0 && hasNode,
		req.Auth != nil && req.Auth.Nonce == nil && hasNode:
		if err := req.Fill(ctx, node, common.HexToAddress(w.Address)); err != nil {
			return nil, chainError(err)
		}
	}
	// Gate 6: the key, for the microseconds of the signature.
	priv, err := s.keys.Unseal(ctx, keys.PurposeWallet, w.sealedKey, aadFor(id, "key"))
	if err != nil {
		return nil, fmt.Errorf("unseal wallet %s: %w", id, err)
	}
	resp, err := req.SignAs(priv, common.HexToAddress(w.Address))
	keys.Zero(priv)
	if err != nil {
		return nil, inputError(err)
	}
	detail := map[string]any{"method": req.Method, "principal": p.String(), "policy": dec, "key_use": "unseal wallet key, sign"}
	// Gate 7: the record commits (with the replay digest and idempotency
	// record) before anything leaves.
	// The release decides again inside the committing transaction: the
	// policy engine sees the aggregation sums as they are at that serialized
	// step and records this request's contribution, so a stateful limit is
	// exact however many requests race for it.
	g := &releaseGate{s: s, c: c, action: "wallet.rpc", walletID: id, p: p, state: state, pin: pin, detail: detail}
	release := func(tx *store.Tx) (any, error) {
		if err := g.check(ctx, tx); err != nil {
			return nil, err
		}
		return resp, nil
	}
	denied := func(err error) error { return g.refusal(ctx, err) }
	if req.Method != wallet.MethodSendTransaction {
		out, err := s.commit(ctx, action{call: c, name: "wallet.rpc", target: id, detail: detail, replay: true, response: release})
		if err != nil {
			return nil, denied(err)
		}
		s.released(req.Method)
		return out, nil
	}
	// eth_sendTransaction: record the signature and mark the idempotency
	// key as in progress, broadcast, then store the response under the key,
	// so neither a concurrent retry nor a retry after a failed broadcast
	// sends a second transaction or is told the first succeeded.
	if _, err := s.commit(ctx, action{call: c, name: "wallet.rpc", target: id, detail: detail, replay: true,
		idempotency: idemPending, response: release}); err != nil {
		return nil, denied(err)
	}
	s.released(req.Method)
	// What the node may have received is recorded even if the caller has
	// gone: a retry under the same idempotency key must get the stored
	// response, not sign and send a second transaction.
	sent := context.WithoutCancel(ctx)
	if err := wallet.Broadcast(ctx, node, resp); err != nil {
		if aerr := s.recordBroadcast(sent, c, id, err); aerr != nil {
			s.opts.Logger.Error("audit of a failed broadcast", "wallet", id, "error", aerr)
		}
		return nil, chainError(err)
	}
	return s.commit(sent, action{call: c, name: "wallet.broadcast", target: id, detail: map[string]any{"caip2": req.CAIP2},
		idempotency: idemComplete, response: func(*store.Tx) (any, error) { return resp, nil }})
}

// releaseGate re-takes, inside the transaction that releases a signature
// or a key, the decisions taken before it: the wallet and the approving
// quorums are as they were checked, and the policy still allows. The
// policy engine then sees the aggregation sums as they are at that
// serialized step and records this request's contribution, so a stateful
// limit is exact however many requests race for it.
type releaseGate struct {
	s        *Service
	c        Call
	action   string // audit action of a denial
	walletID string
	p        principal
	state    string // authState when checked
	pin      policy.Input
	detail   map[string]any // the release's audit detail; gets the final decision
	denial   *policy.Decision
}

// check runs inside the releasing transaction.
func (g *releaseGate) check(ctx context.Context, tx *store.Tx) error {
	if err := unchanged(ctx, tx, g.walletID, g.p.quorums, g.state); err != nil {
		return err
	}
	if err := g.s.userKeysLive(tx, g.p.userKeys); err != nil {
		return err
	}
	d, err := g.s.policy.Commit(ctx, tx, g.pin)
	if err != nil {
		return fmt.Errorf("policy commit for wallet %s: %w", g.walletID, err)
	}
	if !d.Allowed {
		g.denial = &d
		return errorf(PolicyViolation, "denied")
	}
	g.detail["policy"] = d
	return nil
}

// refusal is the caller's error for a release that did not commit: a final
// policy denial is recorded with its trace (the release's transaction
// rolled back), anything else is returned as it is.
func (g *releaseGate) refusal(ctx context.Context, err error) error {
	if g.denial != nil {
		return g.s.policyDenied(ctx, g.c, g.action, g.walletID, g.pin.Request.Method, g.p, *g.denial)
	}
	return err
}

// policyDenied records a policy denial with its trace and returns the
// refusal for the caller.
func (s *Service) policyDenied(ctx context.Context, c Call, actionName, walletID, method string, p principal, d policy.Decision) error {
	detail, _ := json.Marshal(map[string]any{"method": method, "principal": p.String(), "policy": d})
	// Detached from the request: a client that goes away does not cancel
	// the record of its denial (nor turn the denial into a 500).
	err := s.st.Write(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		_, err := audit.Append(tx, audit.Entry{Actor: c.Actor, Action: actionName, Target: walletID, Decision: audit.DecisionDeny,
			RequestDigest: c.RequestHash, Detail: string(detail)})
		return err
	})
	if err != nil {
		return fmt.Errorf("audit of a policy denial on wallet %s: %w", walletID, err)
	}
	s.observer().PolicyDecision(false)
	msg := "Request denied by policy: " + d.Reason
	return &Error{Kind: PolicyViolation, Message: msg, RuleID: d.RuleID, RuleName: d.RuleName, Audited: true}
}

// chainOf is the CAIP-2 id a request is for: its caip2, or its chain id.
func chainOf(r *wallet.Request) string {
	if r.CAIP2 != "" {
		return r.CAIP2
	}
	if id := r.ChainID(); id != nil {
		return "eip155:" + id.String()
	}
	return ""
}

// recordBroadcast records a failed broadcast. When the node refused the
// transaction outright, it was not sent, and the idempotency key is freed
// for a retry; when the outcome is unknown (the node did not answer), the
// key stays in progress, so a retry cannot send a second transaction.
func (s *Service) recordBroadcast(ctx context.Context, c Call, id string, cause error) error {
	detail, _ := json.Marshal(map[string]string{"error": cause.Error()})
	var refused *wallet.RPCError
	return s.st.Write(ctx, func(tx *store.Tx) error {
		if _, err := audit.Append(tx, audit.Entry{Actor: c.Actor, Action: "wallet.broadcast", Target: id, Decision: audit.DecisionDeny, Detail: string(detail)}); err != nil {
			return err
		}
		if c.IdempotencyKey != "" && errors.As(cause, &refused) {
			_, err := tx.Exec(`DELETE FROM idempotency_keys WHERE app_id = ? AND key = ?`, c.App, c.IdempotencyKey)
			return err
		}
		return nil
	})
}

// inputError maps the wallet library's validation errors to Invalid.
func inputError(err error) error {
	var ie *wallet.InputError
	if errors.As(err, &ie) {
		return errorf(Invalid, "%s", ie.Error())
	}
	return err
}

// chainError maps a node's refusal (public chain data) or a mismatch with
// the request to Invalid, and an unreachable node to Unavailable.
func chainError(err error) error {
	var re *wallet.RPCError
	var ie *wallet.InputError
	var ne *wallet.NodeError
	switch {
	case errors.As(err, &re):
		return errorf(Invalid, "The chain node refused the request: %s", re.Error())
	case errors.As(err, &ie):
		return errorf(Invalid, "%s", ie.Error())
	case errors.Is(err, wallet.ErrChainMismatch), errors.Is(err, wallet.ErrHashMismatch), errors.Is(err, wallet.ErrNoBaseFee):
		return errorf(Invalid, "%v", err)
	case errors.As(err, &ne):
		return &Error{Kind: Unavailable, Message: "The chain's JSON-RPC endpoint did not answer: " + ne.Error()}
	}
	return err
}
