package hub

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The admin API's guard runs before every route, in this order (each step
// refuses with a JSON error and changes nothing):
//
//  1. Host must name this listener (its address, the loopback names on its
//     port, the machine's addresses and host name if it listens on a
//     wildcard address, or [admin] allowed_hosts): a DNS-rebinding page
//     reaches us under its own name and is refused (403 forbidden).
//  2. Origin, when present, must be the API's own origin or one of
//     [admin] allowed_origins (403 forbidden); a request a browser marks
//     Sec-Fetch-Site: cross-site or same-site without an Origin is refused
//     too. Allowed origins get CORS answers, preflights included.
//  3. A POST must have a Content-Type other than the three a form can send
//     (text/plain, form-encoded, multipart), such as application/json, or
//     carry the header X-Edgehub-Admin (403 forbidden). A page can make a
//     browser POST those three anywhere without asking; any other type or a
//     custom header it can send only after a CORS preflight, which this hub
//     refuses to other origins. (PATCH, PUT and DELETE are always
//     preflighted.) Step 2 suffices in browsers that send Origin; this one
//     protects the others.
//  4. With [[admin.token]]s, a bearer token (Authorization: Bearer T) is
//     required (401 unauthenticated), and a read token may only GET or HEAD
//     (403 permission_denied). /healthz and the dashboard's HTML (which
//     holds no data) need none; HTTP ingest checks its own (it takes the
//     data plane's [auth] tokens too).

// Error codes of the guard (the others are in admin.go).
const (
	// CodeUnauthenticated (401): admin tokens are configured and the
	// request has none, or an unknown one.
	CodeUnauthenticated = "unauthenticated"
	// CodeForbidden (403): refused by the Host, Origin or POST rule.
	CodeForbidden = "forbidden"
	// CodePermissionDenied (403): the token's role does not allow it.
	CodePermissionDenied = "permission_denied"
)

// HeaderAdminClient marks a request as sent by a program rather than a
// cross-site form (step 3 above); the hub CLI always sends it.
const HeaderAdminClient = "X-Edgehub-Admin"

// adminRefusalLogEvery rate-limits the log of refused requests per reason.
const adminRefusalLogEvery = 10 * time.Second

type adminSecret struct {
	name, role string
	sum        [sha256.Size]byte
}

type adminGuard struct {
	logger     *slog.Logger
	scheme     string          // "http" or "https"
	port       string          // the listener's port
	hosts      map[string]bool // host:port allowed exactly
	anyPort    map[string]bool // host names allowed on any port (allowed_hosts without a port)
	cors       map[string]bool // allowed_origins, canonical
	tokens     []adminSecret
	refused    *prometheus.CounterVec
	logMu      sync.Mutex
	lastLog    map[string]time.Time
	suppressed map[string]int
}

// newAdminGuard builds the guard for a listener bound at addr (configured
// as cfgAddr, which may name a host the bound address does not).
func newAdminGuard(c AdminConfig, cfgAddr string, addr net.Addr, logger *slog.Logger, reg prometheus.Registerer) (*adminGuard, error) {
	g := &adminGuard{logger: logger, scheme: "http", hosts: map[string]bool{}, anyPort: map[string]bool{},
		cors: map[string]bool{}, lastLog: map[string]time.Time{}, suppressed: map[string]int{}}
	if c.TLSEnabled() {
		g.scheme = "https"
	}
	boundHost, port := splitHostPortLoose(addr.String())
	g.port = port
	allow := func(host string) { g.hosts[net.JoinHostPort(strings.ToLower(strings.Trim(host, "[]")), port)] = true }
	for _, h := range []string{"localhost", "127.0.0.1", "::1", boundHost} {
		allow(h)
	}
	if cfgHost, _ := splitHostPortLoose(cfgAddr); cfgHost != "" {
		allow(cfgHost)
	}
	if ip := net.ParseIP(boundHost); ip != nil && ip.IsUnspecified() {
		// Reached under any address of this machine, or its name.
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					allow(ipn.IP.String())
				}
			}
		}
		if hn, err := os.Hostname(); err == nil {
			allow(hn)
		}
	}
	for _, h := range c.AllowedHosts {
		if host, p := splitHostPortLoose(h); p == "" {
			g.anyPort[host] = true
		} else {
			g.hosts[net.JoinHostPort(host, p)] = true
		}
	}
	for _, o := range c.AllowedOrigins {
		co, err := parseOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("hub: admin: %w", err)
		}
		g.cors[co] = true
	}
	for _, t := range c.Tokens {
		s, err := t.secret()
		if err != nil {
			return nil, fmt.Errorf("hub: admin: token %q: %w", t.Name, err)
		}
		g.tokens = append(g.tokens, adminSecret{name: t.Name, role: t.Role, sum: sha256.Sum256([]byte(s))})
	}
	g.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgehub_admin_refused_total",
		Help: "Admin API requests refused by the guard, by reason (host, origin, csrf, unauthenticated, permission).",
	}, []string{"reason"})
	if err := reg.Register(g.refused); err != nil {
		return nil, fmt.Errorf("hub: admin: %w", err)
	}
	return g, nil
}

// hostAllowed reports whether host[:port] (a Host header or an origin's
// host) names this API. A missing port means the scheme's default.
func (g *adminGuard) hostAllowed(hostport, defaultPort string) bool {
	host, port := splitHostPortLoose(hostport)
	if host == "" {
		return false
	}
	if g.anyPort[host] {
		return true
	}
	if port == "" {
		port = defaultPort
	}
	return g.hosts[net.JoinHostPort(host, port)]
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// originAllowed reports whether a browser origin may call the API, and
// whether it is a configured (CORS) origin.
func (g *adminGuard) originAllowed(origin string) (ok, cors bool) {
	co, err := parseOrigin(origin)
	if err != nil {
		return false, false
	}
	if g.cors[co] {
		return true, true
	}
	u, _ := url.Parse(co)
	return u.Scheme == g.scheme && g.hostAllowed(u.Host, defaultPort(u.Scheme)), false
}

// refuse writes the error, counts it and logs it (rate-limited per reason;
// never the token).
func (g *adminGuard) refuse(w http.ResponseWriter, r *http.Request, reason string, err *apiError) {
	g.refused.WithLabelValues(reason).Inc()
	now := time.Now()
	g.logMu.Lock()
	log := now.Sub(g.lastLog[reason]) >= adminRefusalLogEvery
	suppressed := g.suppressed[reason]
	if log {
		g.lastLog[reason], g.suppressed[reason] = now, 0
	} else {
		g.suppressed[reason]++
	}
	g.logMu.Unlock()
	if log {
		g.logger.Warn("admin request refused", "reason", reason, "method", r.Method, "path", r.URL.Path,
			"host", r.Host, "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr, "err", err.err,
			"suppressed_since_last", suppressed)
	}
	if err.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgehub admin"`)
	}
	writeError(w, err)
}

func forbidden(format string, args ...any) *apiError {
	return &apiError{http.StatusForbidden, CodeForbidden, fmt.Errorf(format, args...)}
}

// wrap returns next behind the guard.
func (g *adminGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host, defaultPort(g.scheme)) {
			g.refuse(w, r, "host", forbidden("admin: Host %q does not name this hub's admin API (add it to [admin] allowed_hosts "+
				"if it should; other names are refused against DNS rebinding)", r.Host))
			return
		}
		origin := r.Header.Get("Origin")
		cors := false
		if origin != "" {
			var ok bool
			if ok, cors = g.originAllowed(origin); !ok {
				g.refuse(w, r, "origin", forbidden("admin: requests from origin %q are refused (add it to [admin] allowed_origins "+
					"if its pages should call this API)", origin))
				return
			}
		} else if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
			g.refuse(w, r, "origin", forbidden("admin: a %s request without an Origin is refused", site))
			return
		}
		if cors {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				w.Header().Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PATCH, PUT, DELETE")
				w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, "+HeaderAdminClient)
				w.Header().Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if r.Method == http.MethodPost && r.Header.Get(HeaderAdminClient) == "" && !preflightedType(r.Header.Get("Content-Type")) {
			g.refuse(w, r, "csrf", forbidden("admin: a POST needs a Content-Type other than text/plain, form or multipart (such as application/json, "+
				"application/x-ndjson or application/octet-stream) or the header %s (a cross-site page can make a browser send neither without permission; docs/admin-api.md, \"Security\")", HeaderAdminClient))
			return
		}
		if len(g.tokens) > 0 && !publicAdminPath(r) && !selfAuthenticated(r) {
			t, err := g.authenticate(r)
			if err != nil {
				g.refuse(w, r, "unauthenticated", &apiError{http.StatusUnauthorized, CodeUnauthenticated, err})
				return
			}
			if t.role != RoleWrite && r.Method != http.MethodGet && r.Method != http.MethodHead {
				g.refuse(w, r, "permission", &apiError{http.StatusForbidden, CodePermissionDenied,
					fmt.Errorf("admin: token %q has role %q, which may not %s %s (it needs role %q)", t.name, t.role, r.Method, r.URL.Path, RoleWrite)})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// preflightedType reports whether a browser sends a request with this
// Content-Type only after a CORS preflight: any type but none and the three
// a form can send (text/plain, application/x-www-form-urlencoded,
// multipart/form-data). Step 2 refuses such a preflight from other origins.
func preflightedType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	switch mt {
	case "text/plain", "application/x-www-form-urlencoded", "multipart/form-data":
		return false
	}
	return true
}

// selfAuthenticated: routes that check credentials themselves, with the
// data plane's [auth] as well as admin tokens (HTTP ingest: a device holds
// a produce token, not an admin token; see http_ingest.go).
func selfAuthenticated(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	m, _ := path.Match(ingestPathPattern, r.URL.Path)
	return m
}

// publicAdminPath: what needs no token. /healthz tells only readiness and
// the name (liveness probes carry no credentials); the dashboard's HTML
// holds no data (its script asks for a token and sends it).
func publicAdminPath(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return r.URL.Path == "/healthz" || r.URL.Path == "/"
}

// authenticate finds the request's bearer token.
func (g *adminGuard) authenticate(r *http.Request) (adminSecret, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return adminSecret{}, errors.New("admin: this hub requires an admin token: send Authorization: Bearer TOKEN " +
			"(hub CLI: --token or HUB_ADMIN_TOKEN)")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return adminSecret{}, errors.New("admin: the Authorization header must be \"Bearer TOKEN\"")
	}
	found, ok := g.lookup(strings.TrimSpace(tok))
	if !ok {
		return adminSecret{}, errors.New("admin: unknown admin token")
	}
	return found, nil
}

// lookup finds an admin token. Every configured token is compared in
// constant time, so timing tells nothing of which matched.
func (g *adminGuard) lookup(tok string) (adminSecret, bool) {
	sum := sha256.Sum256([]byte(tok))
	found, match := adminSecret{}, 0
	for _, t := range g.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			found, match = t, 1
		}
	}
	return found, match == 1
}

// adminTLS returns the admin listener's TLS configuration: [admin]
// cert_file, else the data plane's certificate.
func (h *Hub) adminTLS() (*tls.Config, error) {
	c := h.cfg.Admin
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hub: admin tls: load %s: %w", c.CertFile, err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	}
	dp, err := h.serverTLS()
	if err != nil {
		return nil, fmt.Errorf("hub: admin tls: %w", err)
	}
	return &tls.Config{Certificates: dp.Certificates, MinVersion: tls.VersionTLS12}, nil
}
