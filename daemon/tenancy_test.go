package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cachet-custody/cachet/client"
	"github.com/cachet-custody/cachet/custody"
	"github.com/cachet-custody/cachet/hpkebox"
	"github.com/cachet-custody/cachet/quorum"
)

// testSecret2 is app_2's secret in the rig.
const testSecret2 = "cachet_secret_test_2"

// sendAs2 sends one request with app_2's credentials, signed (for app_2,
// over exactly the bytes sent) by signers. It returns the raw body too.
func (r *rig) sendAs2(method, path string, body []byte, signers ...*ecdsa.PrivateKey) (int, map[string]any, string) {
	r.t.Helper()
	h := http.Header{}
	h.Set("privy-app-id", "app_2")
	h.Set("privy-request-expiry", fmt.Sprint(time.Now().Add(r.expiry).UnixMilli()))
	if len(signers) > 0 {
		sig, err := client.Sign(quorum.Request{Method: method, URL: "http://localhost" + path, Body: body, Headers: h}, signers)
		if err != nil {
			r.t.Fatal(err)
		}
		h.Set("privy-authorization-signature", sig)
	}
	req := httptest.NewRequest(method, "http://localhost"+path, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", basicAuthHeader("app_2", testSecret2))
	req = req.WithContext(context.WithValue(req.Context(), peerKey{}, Peer{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}))
	w := httptest.NewRecorder()
	r.srv.ServeHTTP(w, req)
	var m map[string]any
	json.Unmarshal(w.Body.Bytes(), &m)
	return w.Code, m, w.Body.String()
}

// Every object of one app is out of reach of another app's credentials, on
// every route of the API: app_2 can neither read, list, page to, change,
// sign with, export nor delete app_1's wallets, key quorums, users,
// policies and their rules, condition sets and their items, aggregations,
// embedded wallets and authorization keys, nor name any of them inside a
// body of its own (owner, owner_id, policy_ids, signers and their override
// policies, quorum members, a rule's condition set or aggregation). The
// requests are signed by the key that owns app_1's objects, and app_2 has
// a user of the same name trusting the same identity provider, so that the
// app is the only reason for each refusal. Nothing in the store changes,
// and no answer carries an id of app_1's.
func TestCrossAppAccessRefused(t *testing.T) {
	r := newRig(t)
	str := func(m map[string]any, k string) string { return m[k].(string) }

	// app_1's objects.
	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	qid := str(q, "id")
	pol := r.must("POST", "/v1/policies", `{"version":"1.0","name":"p","chain_type":"ethereum","owner_id":"`+qid+`",
		"rules":[{"name":"r","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_transaction","field":"value","operator":"lte","value":"1000"}]}]}`)
	pid := str(pol, "id")
	rid := str(pol["rules"].([]any)[0].(map[string]any), "id")
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"`+qid+`","policy_ids":["`+pid+`"]}`)
	wid := str(w, "id")
	open := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum"}`)
	openID := str(open, "id")
	alice := r.must("POST", "/v1/users", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"alice"}]}`)
	uid := str(alice, "id")
	r.must("POST", "/v1/users", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"bob"}]}`)
	device, _ := hpkebox.GenerateKey()
	ew := r.must("POST", "/v1/embedded_wallets", `{"user_jwt":"`+r.token("alice")+`","device_public_key":"`+spki(t, device)+`","recovery":{"method":"automatic"}}`)
	ewid := str(ew, "id")
	cs := r.must("POST", "/v1/condition_sets", `{"name":"payees","owner_id":"`+qid+`"}`)
	csid := str(cs, "id")
	var items []map[string]any
	code, _ := r.send("POST", "/v1/condition_sets/"+csid+"/condition_set_items", []byte(`[{"value":"0x000000000000000000000000000000000000dEaD"}]`), r.owner)
	if code != http.StatusOK {
		t.Fatalf("items: %d", code)
	}
	page := r.must("GET", "/v1/condition_sets/"+csid+"/condition_set_items", "")
	b, _ := json.Marshal(page["items"])
	json.Unmarshal(b, &items)
	itemID := items[0]["id"].(string)
	agg := r.must("POST", "/v1/aggregations", `{"name":"ETH per day","method":"eth_signTransaction","metric":{"field_source":"ethereum_transaction","field":"value","function":"sum"},"window":{"type":"rolling","seconds":86400}}`)
	aggID := str(agg, "id")
	code, ak := r.send("POST", "/v1/authorization_keys", []byte(`{"allowed_callers":{"uids":[`+fmt.Sprint(os.Getuid())+`]}}`))
	if code != http.StatusOK {
		t.Fatalf("authorization key: %d %v", code, ak)
	}
	akid := str(ak, "id")
	victims := []string{qid, pid, rid, wid, openID, uid, ewid, csid, itemID, aggID, akid}

	// app_2's own objects, to name app_1's from: a user of the same name,
	// a condition set and a wallet.
	mine := func(method, path, body string, signers ...*ecdsa.PrivateKey) map[string]any {
		t.Helper()
		code, m, raw := r.sendAs2(method, path, []byte(body), signers...)
		if code != http.StatusOK {
			t.Fatalf("app_2 %s %s: %d %s", method, path, code, raw)
		}
		return m
	}
	mine("POST", "/v1/users", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"alice"}]}`)
	myQ := mine("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	myCS := str(mine("POST", "/v1/condition_sets", `{"name":"mine","owner_id":"`+str(myQ, "id")+`"}`), "id")
	myW := str(mine("POST", "/v1/wallets", `{"chain_type":"ethereum"}`), "id")
	myPol := str(mine("POST", "/v1/policies", `{"version":"1.0","name":"mine","chain_type":"ethereum","rules":[]}`), "id")

	recipient, _ := hpkebox.GenerateKey()
	tx := `{"to":"0x000000000000000000000000000000000000dEaD","value":"0x1","chain_id":1,"nonce":1,"gas_limit":21000,"max_fee_per_gas":"0x3b9aca00","max_priority_fee_per_gas":"0x1","type":2}`
	rule := func(cond string) string {
		return `{"version":"1.0","name":"x","chain_type":"ethereum","rules":[{"name":"r","method":"eth_signTransaction","action":"ALLOW","conditions":[` + cond + `]}]}`
	}
	jwt := r.token("alice")
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		// Reads.
		{"get wallet", "GET", "/v1/wallets/" + wid, "", 404},
		{"get wallet without owner", "GET", "/v1/wallets/" + openID, "", 404},
		{"get key quorum", "GET", "/v1/key_quorums/" + qid, "", 404},
		{"get user", "GET", "/v1/users/" + uid, "", 404},
		{"get policy", "GET", "/v1/policies/" + pid, "", 404},
		{"get rule", "GET", "/v1/policies/" + pid + "/rules/" + rid, "", 404},
		{"get condition set", "GET", "/v1/condition_sets/" + csid, "", 404},
		{"list items", "GET", "/v1/condition_sets/" + csid + "/condition_set_items", "", 404},
		{"get aggregation", "GET", "/v1/aggregations/" + aggID, "", 404},
		{"get embedded wallet", "GET", "/v1/embedded_wallets/" + ewid, "", 404},
		{"get authorization key", "GET", "/v1/authorization_keys/" + akid, "", 404},
		{"user by custom id of app_1 only", "POST", "/v1/users/custom_auth/id", `{"custom_user_id":"bob"}`, 404},
		// Cursors of app_1's objects.
		{"wallets after app_1's wallet", "GET", "/v1/wallets?cursor=" + wid, "", 400},
		{"users after app_1's user", "GET", "/v1/users?cursor=" + uid, "", 400},
		{"own items after app_1's item", "GET", "/v1/condition_sets/" + myCS + "/condition_set_items?cursor=" + itemID, "", 400},
		// Changes, signatures and exports of app_1's objects.
		{"update key quorum", "PATCH", "/v1/key_quorums/" + qid, `{"display_name":"x"}`, 404},
		{"delete key quorum", "DELETE", "/v1/key_quorums/" + qid, "", 404},
		{"update wallet", "PATCH", "/v1/wallets/" + wid, `{"display_name":"x"}`, 404},
		{"update wallet without owner", "PATCH", "/v1/wallets/" + openID, `{"owner_id":"` + str(myQ, "id") + `"}`, 404},
		{"archive wallet", "POST", "/v1/wallets/" + openID + "/archive", "", 404},
		{"rpc", "POST", "/v1/wallets/" + wid + "/rpc", `{"method":"eth_signTransaction","params":{"transaction":` + tx + `}}`, 404},
		{"rpc on a wallet without owner", "POST", "/v1/wallets/" + openID + "/rpc", `{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`, 404},
		{"raw_sign", "POST", "/v1/wallets/" + openID + "/raw_sign", `{"params":{"hash":"0x` + strings.Repeat("ab", 32) + `"}}`, 404},
		{"export", "POST", "/v1/wallets/" + wid + "/export", `{"encryption_type":"HPKE","recipient_public_key":"` + spki(t, recipient) + `"}`, 404},
		{"delete user", "DELETE", "/v1/users/" + uid, "", 404},
		{"update policy", "PATCH", "/v1/policies/" + pid, `{"name":"x"}`, 404},
		{"delete policy", "DELETE", "/v1/policies/" + pid, "", 404},
		{"evaluate policy", "POST", "/v1/policies/" + pid + "/evaluate", `{"method":"eth_signTransaction","params":{"transaction":` + tx + `}}`, 404},
		{"add rule", "POST", "/v1/policies/" + pid + "/rules", `{"name":"r3","method":"personal_sign","action":"ALLOW","conditions":[]}`, 404},
		{"update rule", "PATCH", "/v1/policies/" + pid + "/rules/" + rid, `{"name":"r","method":"eth_signTransaction","action":"ALLOW","conditions":[]}`, 404},
		{"delete rule", "DELETE", "/v1/policies/" + pid + "/rules/" + rid, "", 404},
		{"delete aggregation", "DELETE", "/v1/aggregations/" + aggID, "", 404},
		{"update condition set", "PATCH", "/v1/condition_sets/" + csid, `{"name":"x"}`, 404},
		{"delete condition set", "DELETE", "/v1/condition_sets/" + csid, "", 404},
		{"append items", "POST", "/v1/condition_sets/" + csid + "/condition_set_items", `[{"value":"0x000000000000000000000000000000000000bEEF"}]`, 404},
		{"replace items", "PUT", "/v1/condition_sets/" + csid + "/condition_set_items", `[{"value":"0x000000000000000000000000000000000000bEEF"}]`, 404},
		{"delete item", "DELETE", "/v1/condition_sets/" + csid + "/condition_set_items/" + itemID, "", 404},
		{"own set, app_1's item", "DELETE", "/v1/condition_sets/" + myCS + "/condition_set_items/" + itemID, "", 404},
		{"recover embedded wallet", "POST", "/v1/embedded_wallets/" + ewid + "/recover", `{"user_jwt":"` + jwt + `","device_public_key":"` + spki(t, device) + `"}`, 404},
		{"auth share", "POST", "/v1/embedded_wallets/" + ewid + "/auth_share", `{"user_jwt":"` + jwt + `","device_public_key":"` + spki(t, device) + `"}`, 404},
		{"challenge", "POST", "/v1/embedded_wallets/" + ewid + "/challenge", `{"user_jwt":"` + jwt + `"}`, 404},
		{"sign with authorization key", "POST", "/v1/authorization_keys/" + akid + "/sign", `{"method":"POST","url":"http://localhost/v1/wallets/` + myW + `/rpc","body":{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}},"headers":{"privy-app-id":"app_2","privy-request-expiry":"` + fmt.Sprint(time.Now().Add(time.Hour).UnixMilli()) + `"}}`, 404},
		{"delete authorization key", "DELETE", "/v1/authorization_keys/" + akid, "", 404},
		// app_1's objects named inside app_2's bodies.
		{"wallet owned by app_1's quorum", "POST", "/v1/wallets", `{"chain_type":"ethereum","owner_id":"` + qid + `"}`, 400},
		{"wallet owned by app_1's user", "POST", "/v1/wallets", `{"chain_type":"ethereum","owner":{"user_id":"` + uid + `"}}`, 400},
		{"wallet under app_1's policy", "POST", "/v1/wallets", `{"chain_type":"ethereum","policy_ids":["` + pid + `"]}`, 400},
		{"signer is app_1's quorum", "POST", "/v1/wallets", `{"chain_type":"ethereum","additional_signers":[{"signer_id":"` + qid + `"}]}`, 400},
		{"signer overridden by app_1's policy", "POST", "/v1/wallets", `{"chain_type":"ethereum","additional_signers":[{"signer_id":"` + str(myQ, "id") + `","override_policy_ids":["` + pid + `"]}]}`, 400},
		{"own wallet to app_1's policy", "PATCH", "/v1/wallets/" + myW, `{"policy_ids":["` + pid + `"]}`, 400},
		{"own wallet to app_1's user", "PATCH", "/v1/wallets/" + myW, `{"owner":{"user_id":"` + uid + `"}}`, 400},
		{"quorum of app_1's user", "POST", "/v1/key_quorums", `{"user_ids":["` + uid + `"]}`, 400},
		{"quorum nesting app_1's quorum", "POST", "/v1/key_quorums", `{"key_quorum_ids":["` + qid + `"]}`, 400},
		{"own quorum gains app_1's user", "PATCH", "/v1/key_quorums/" + str(myQ, "id"), `{"user_ids":["` + uid + `"]}`, 400},
		{"policy owned by app_1's quorum", "POST", "/v1/policies", `{"version":"1.0","name":"x","chain_type":"ethereum","owner_id":"` + qid + `","rules":[]}`, 400},
		{"policy owned by app_1's user", "POST", "/v1/policies", `{"version":"1.0","name":"x","chain_type":"ethereum","owner":{"user_id":"` + uid + `"},"rules":[]}`, 400},
		{"rule on app_1's condition set", "POST", "/v1/policies", rule(`{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"` + csid + `"}`), 400},
		{"rule on app_1's aggregation", "POST", "/v1/policies", rule(`{"field_source":"reference","field":"aggregation.` + aggID + `","operator":"lte","value":"1"}`), 400},
		{"own policy gains a rule on app_1's condition set", "POST", "/v1/policies/" + myPol + "/rules", `{"name":"r","method":"eth_signTransaction","action":"ALLOW","conditions":[{"field_source":"ethereum_transaction","field":"to","operator":"in_condition_set","value":"` + csid + `"}]}`, 400},
		{"condition set owned by app_1's quorum", "POST", "/v1/condition_sets", `{"name":"x","owner_id":"` + qid + `"}`, 400},
		{"aggregation owned by app_1's quorum", "POST", "/v1/aggregations", `{"name":"x","method":"eth_signTransaction","metric":{"field_source":"ethereum_transaction","field":"value","function":"sum"},"window":{"type":"rolling","seconds":86400},"owner_id":"` + qid + `"}`, 400},
		{"own policy evaluated for app_1's wallet", "POST", "/v1/policies/" + myPol + "/evaluate", `{"method":"eth_signTransaction","wallet_id":"` + wid + `","params":{"transaction":` + tx + `}}`, 400},
		{"user key for a user of app_1 only", "POST", "/v1/wallets/authenticate", `{"user_jwt":"` + r.token("bob") + `","encryption_type":"HPKE","recipient_public_key":"` + spki(t, recipient) + `"}`, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.fingerprint()
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			var signers []*ecdsa.PrivateKey
			if tc.method != "GET" {
				signers = append(signers, r.owner)
			}
			code, m, raw := r.sendAs2(tc.method, tc.path, body, signers...)
			wantCode := map[int]string{400: CodeInvalidData, 404: CodeNotFound}[tc.want]
			if code != tc.want || m["code"] != wantCode {
				t.Fatalf("%d %s, want %d %s", code, raw, tc.want, wantCode)
			}
			if r.fingerprint() != before {
				t.Fatal("the refused request changed the store")
			}
		})
	}
	// app_2's lists hold none of app_1's objects.
	for _, p := range []string{"/v1/wallets", "/v1/users", "/v1/authorization_keys", "/v1/condition_sets/" + myCS + "/condition_set_items"} {
		code, _, raw := r.sendAs2("GET", p, nil)
		if code != http.StatusOK {
			t.Fatalf("app_2 GET %s: %d %s", p, code, raw)
		}
		for _, id := range victims {
			if strings.Contains(raw, id) {
				t.Errorf("app_2 GET %s lists app_1's %s: %s", p, id, raw)
			}
		}
	}
	// And app_1 still reaches each of its own.
	for _, p := range []string{"/v1/wallets/" + wid, "/v1/key_quorums/" + qid, "/v1/users/" + uid, "/v1/policies/" + pid, "/v1/condition_sets/" + csid,
		"/v1/aggregations/" + aggID, "/v1/embedded_wallets/" + ewid, "/v1/authorization_keys/" + akid} {
		if code, m := r.send("GET", p, nil); code != http.StatusOK {
			t.Fatalf("app_1 GET %s: %d %v", p, code, m)
		}
	}
}

// Two apps that trust the same identity provider each have a user "alice":
// the same JWT gets a user key from either app, and each key approves for
// its own app's alice only. app_2's key for alice neither approves a
// request on app_1's wallet owned by app_1's alice, nor does app_2's
// answer list that wallet among alice's.
func TestUserKeyOfAnotherAppDoesNotApprove(t *testing.T) {
	r := newRig(t)
	alice := r.must("POST", "/v1/users", `{"linked_accounts":[{"type":"custom_auth","custom_user_id":"alice"}]}`)
	w := r.must("POST", "/v1/wallets", `{"chain_type":"ethereum","owner":{"user_id":"`+alice["id"].(string)+`"}}`)
	wid := w["id"].(string)
	if code, _, raw := r.sendAs2("POST", "/v1/users", []byte(`{"linked_accounts":[{"type":"custom_auth","custom_user_id":"alice"}]}`)); code != http.StatusOK {
		t.Fatalf("app_2's alice: %d %s", code, raw)
	}
	recipient, _ := hpkebox.GenerateKey()
	body := []byte(`{"user_jwt":"` + r.token("alice") + `","encryption_type":"HPKE","recipient_public_key":"` + spki(t, recipient) + `"}`)
	userKey := func(app string, code int, raw string) *ecdsa.PrivateKey {
		t.Helper()
		if code != http.StatusOK {
			t.Fatalf("authenticate: %d %s", code, raw)
		}
		var resp custody.AuthenticateResponse
		if err := json.Unmarshal([]byte(raw), &resp); err != nil {
			t.Fatal(err)
		}
		for _, wl := range resp.Wallets {
			if wl.ID == wid && app == "app_2" {
				t.Errorf("app_2's answer lists app_1's wallet %s", wid)
			}
		}
		k, err := client.OpenUserKey(recipient, resp.EncryptedAuthorizationKey)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	code, _, raw := r.sendAs2("POST", "/v1/wallets/authenticate", body)
	k2 := userKey("app_2", code, raw)
	code, m1 := r.send("POST", "/v1/wallets/authenticate", body)
	raw1, _ := json.Marshal(m1)
	k1 := userKey("app_1", code, string(raw1))

	rpc := "/v1/wallets/" + wid + "/rpc"
	msg := []byte(`{"method":"personal_sign","params":{"message":"hi","encoding":"utf-8"}}`)
	before := r.fingerprint()
	if code, m := r.send("POST", rpc, msg, k2); code != http.StatusUnauthorized || m["code"] != CodeUnauthorized {
		t.Fatalf("app_1's wallet signed with app_2's user key: %d %v, want 401 unauthorized", code, m)
	}
	if r.fingerprint() != before {
		t.Fatal("the refused request changed the store")
	}
	if code, m := r.send("POST", rpc, msg, k1); code != http.StatusOK {
		t.Fatalf("app_1's own user key: %d %v", code, m)
	}
}

// The three paginated lists page the same way over HTTP: limit is an
// integer from 1 to 100 (anything else is refused with invalid_data, not
// clamped), a page of limit items carries the cursor of the next, and the
// last page none.
func TestListPaging(t *testing.T) {
	r := newRig(t)
	q := r.must("POST", "/v1/key_quorums", `{"public_keys":["`+r.pub+`"],"authorization_threshold":1}`)
	cs := r.must("POST", "/v1/condition_sets", `{"name":"s","owner_id":"`+q["id"].(string)+`"}`)
	items := "/v1/condition_sets/" + cs["id"].(string) + "/condition_set_items"
	for i := range 3 {
		r.must("POST", "/v1/wallets", `{"chain_type":"ethereum"}`)
		r.must("POST", "/v1/users", fmt.Sprintf(`{"linked_accounts":[{"type":"custom_auth","custom_user_id":"u%d"}]}`, i))
	}
	if code, m := r.send("POST", items, []byte(`[{"value":"a"},{"value":"b"},{"value":"c"}]`), r.owner); code != http.StatusOK {
		t.Fatalf("items: %d %v", code, m)
	}
	for _, l := range []struct{ path, field string }{{"/v1/wallets", "data"}, {"/v1/users", "data"}, {items, "items"}} {
		t.Run(l.path, func(t *testing.T) {
			var seen []string
			cursor := ""
			for page := 0; ; page++ {
				p := l.path + "?limit=2"
				if cursor != "" {
					p += "&cursor=" + cursor
				}
				m := r.must("GET", p, "")
				got := m[l.field].([]any)
				for _, it := range got {
					seen = append(seen, it.(map[string]any)["id"].(string))
				}
				next, more := m["next_cursor"].(string)
				if want := []int{2, 1}[page]; len(got) != want || more != (page == 0) {
					t.Fatalf("page %d: %d items, next_cursor %v", page, len(got), m["next_cursor"])
				}
				if !more {
					break
				}
				cursor = next
			}
			if len(seen) != 3 || seen[0] == seen[1] || seen[1] == seen[2] || seen[0] == seen[2] {
				t.Fatalf("pages hold %v, want 3 distinct", seen)
			}
			for _, bad := range []string{"0", "101", "-1", "abc", "1.5", "", "0x10", "99999999999999999999", "%2B5", "-0", "2&limit=3"} {
				p := l.path + "?limit=" + bad
				if bad == "" {
					p = l.path + "?limit"
				}
				code, m := r.send("GET", p, nil)
				if bad == "" {
					// An empty limit is no limit.
					if code != http.StatusOK {
						t.Errorf("GET %s: %d %v", p, code, m)
					}
					continue
				}
				if code != http.StatusBadRequest || m["code"] != CodeInvalidData {
					t.Errorf("GET %s: %d %v, want 400 invalid_data", p, code, m)
				}
			}
			for _, bad := range []string{"nope", seen[0] + "x", "%00", cursor + "&cursor=" + cursor} {
				if code, m := r.send("GET", l.path+"?cursor="+bad, nil); code != http.StatusBadRequest || m["code"] != CodeInvalidData {
					t.Errorf("cursor %q: %d %v, want 400 invalid_data", bad, code, m)
				}
			}
		})
	}
}
