// Command cert-manager-controller runs the real cert-manager v1.21 controllers out of cluster, for the
// test bed: the upstream controller binary lives in a nested module the Go module proxy does not serve,
// so this main wires the public pkg/controller API itself. Defaults are upstream's (copied by hand from
// internal/apis/config/controller/v1alpha1, which cannot be imported); see docs/cert-manager-controller.md.
// There is no webhook and no leader election; logs go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	dnsutil "github.com/cert-manager/cert-manager/pkg/issuer/acme/dns/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	// Controllers and the ACME issuer register themselves in controller.Known() / the issuer registry.
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	_ "github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/acme"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
)

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// enabled resolves --controllers like upstream: "*" is every registered controller, "-name" removes one.
func enabled(spec string) (sets.Set[string], error) {
	known := sets.KeySet(controller.Known())
	on, off := sets.New[string](), sets.New[string]()
	for _, name := range list(spec) {
		switch {
		case name == "*":
			on = on.Union(known)
		case strings.HasPrefix(name, "-"):
			off.Insert(strings.TrimPrefix(name, "-"))
		default:
			on.Insert(name)
		}
	}
	if on.Len() == 0 && off.Len() > 0 {
		on = on.Union(known)
	}
	if unknown := on.Union(off).Difference(known); unknown.Len() > 0 {
		return nil, fmt.Errorf("unknown controllers %v (registered: %v)", sets.List(unknown), sets.List(known))
	}
	return on.Difference(off), nil
}

func main() {
	klog.InitFlags(nil)    // -v and friends; klog writes to stderr by default
	_ = flag.Set("v", "2") // upstream's Helm chart default; 4 adds every self-check and its outcome
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (empty: in-cluster)")
	namespace := flag.String("namespace", "", "only this namespace (empty: all)")
	qps := flag.Float64("kube-api-qps", 20, "client QPS when the server has no API Priority and Fairness")
	burst := flag.Int("kube-api-burst", 50, "client burst when the server has no API Priority and Fairness")
	clusterNS := flag.String("cluster-resource-namespace", "kube-system", "namespace of ClusterIssuer secrets")
	gatewayAPI := flag.Bool("enable-gateway-api", false, "Gateway API support (the gatewayHTTPRoute solver)")
	solverImage := flag.String("acme-http01-solver-image",
		"quay.io/jetstack/cert-manager-acmesolver:"+util.AppVersion, "image of HTTP-01 solver Pods")
	solverNS := flag.String("acme-http01-solver-nameservers", "", "host:port,... for HTTP-01 self-check lookups")
	dnsNS := flag.String("dns01-recursive-nameservers", "", "host:port,... for DNS-01 checks (empty: resolv.conf)")
	dnsRecursiveOnly := flag.Bool("dns01-recursive-nameservers-only", false, "DNS-01: never ask authoritative servers")
	retry := flag.Duration("dns01-check-retry-period", 10*time.Second, "wait between self-checks (HTTP-01 too)")
	maxChallenges := flag.Int("max-concurrent-challenges", 60, "challenges 'processing' at once")
	workers := flag.Int("concurrent-workers", 5, "workers per controller")
	controllers := flag.String("controllers", "*", "controllers to run: '*', names, '-name' to drop one")
	gates := flag.String("feature-gates", "", "cert-manager feature gates, Name=bool,...")
	listen := flag.String("listen-address", "", "serve /metrics and /readyz here (empty: off)")
	version := flag.Bool("version", false, "print the version and the registered controllers, then exit")
	flag.Parse()
	if *version {
		fmt.Println("cert-manager", util.AppVersion, "controllers:", strings.Join(sets.List(sets.KeySet(controller.Known())), ","))
		return
	}

	log := logf.Log
	if err := run(log, func(ctx context.Context) error {
		if err := utilfeature.DefaultMutableFeatureGate.Set(*gates); err != nil {
			return fmt.Errorf("--feature-gates: %w", err)
		}
		on, err := enabled(*controllers)
		if err != nil {
			return err
		}
		if *retry <= 0 {
			return errors.New("--dns01-check-retry-period must be positive")
		}
		dns01 := list(*dnsNS)
		if len(dns01) == 0 {
			dns01 = dnsutil.RecursiveNameservers
		}
		opts := controller.ContextOptions{
			Kubeconfig: *kubeconfig, KubernetesAPIQPS: float32(*qps), KubernetesAPIBurst: *burst, Namespace: *namespace,
			IssuerOptions: controller.IssuerOptions{ClusterResourceNamespace: *clusterNS,
				ClusterIssuerAmbientCredentials: true, IssuerAmbientCredentials: false},
			ACMEOptions: controller.ACMEOptions{
				HTTP01SolverImage:                 *solverImage,
				HTTP01SolverResourceRequestCPU:    resource.MustParse("10m"),
				HTTP01SolverResourceRequestMemory: resource.MustParse("64Mi"),
				HTTP01SolverResourceLimitsCPU:     resource.MustParse("100m"),
				HTTP01SolverResourceLimitsMemory:  resource.MustParse("64Mi"),
				ACMEHTTP01SolverRunAsNonRoot:      true,
				HTTP01SolverNameservers:           list(*solverNS),
				DNS01Nameservers:                  dns01,
				DNS01CheckAuthoritative:           !*dnsRecursiveOnly,
				DNS01CheckRetryPeriod:             *retry,
			},
			IngressShimOptions: controller.IngressShimOptions{DefaultIssuerKind: "Issuer", DefaultIssuerGroup: "cert-manager.io",
				DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"}, GatewayAPIExtraProtocols: sets.New[string]()},
			CertificateOptions: controller.CertificateOptions{
				CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
				CertificateRequestMinimumBackoffDuration: time.Hour,
				CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
			},
			SchedulerOptions: controller.SchedulerOptions{MaxConcurrentChallenges: *maxChallenges},
			ConfigOptions:    controller.ConfigOptions{EnableGatewayAPI: *gatewayAPI},
		}
		log.Info("starting cert-manager controllers", "version", util.AppVersion, "controllers", sets.List(on),
			"gatewayAPI", *gatewayAPI, "checkRetryPeriod", *retry, "http01Nameservers", opts.HTTP01SolverNameservers)
		return serve(ctx, log, opts, on, *workers, *listen)
	}); err != nil {
		log.Error(err, "cert-manager controller failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// run gives body a context cancelled by SIGINT/SIGTERM and carrying the logger.
func run(log klog.Logger, body func(context.Context) error) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return body(logf.NewContext(ctx, log))
}

// serve mirrors upstream's start order: context factory, controllers (each registers the informers it
// needs), then the informer factories; an informer requested after Start would never run.
func serve(ctx context.Context, log klog.Logger, opts controller.ContextOptions, on sets.Set[string], workers int, listen string) error {
	factory, err := controller.NewContextFactory(ctx, opts)
	if err != nil {
		return err
	}
	base, err := factory.Build()
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range sets.List(on) {
		ctrl, err := controller.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("constructing controller %s: %w", name, err)
		}
		g.Go(func() error { return ctrl.Run(workers, ctx) })
	}

	var ready atomic.Bool
	if listen != "" {
		lister := base.SharedInformerFactory
		base.Metrics.SetupACMECollector(lister.Acme().V1().Challenges().Lister())
		base.Metrics.SetupCertificateCollector(lister.Certmanager().V1().Certificates().Lister())
		base.Metrics.SetupIssuerCollector(lister.Certmanager().V1().Issuers().Lister())
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
		if err != nil {
			return err
		}
		srv := base.Metrics.NewServer(ln)
		mux := http.NewServeMux()
		mux.Handle("/metrics", srv.Handler)
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Load() {
				http.Error(w, "informers not synced", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})
		srv.Handler = mux
		g.Go(func() error {
			<-ctx.Done()
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shutdown) //nolint:contextcheck // ctx is already done
		})
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}

	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	if base.GatewaySolverEnabled {
		base.GWShared.Start(ctx.Done())
	}
	g.Go(func() error {
		err := errors.Join(synced(base.SharedInformerFactory.WaitForCacheSync(ctx.Done())),
			synced(base.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done())),
			synced(base.HTTP01ResourceMetadataInformersFactory.WaitForCacheSync(ctx.Done())))
		if base.GatewaySolverEnabled {
			err = errors.Join(err, synced(base.GWShared.WaitForCacheSync(ctx.Done())))
		}
		if ctx.Err() != nil { // shutting down before the caches filled: not a failure
			return nil
		}
		if err != nil {
			return err
		}
		ready.Store(true)
		log.Info("informers synced; cert-manager controllers ready", "gatewaySolver", base.GatewaySolverEnabled)
		return nil
	})
	err = g.Wait()
	base.GWShared.Shutdown()
	base.HTTP01ResourceMetadataInformersFactory.Shutdown()
	base.KubeSharedInformerFactory.Shutdown()
	base.SharedInformerFactory.Shutdown()
	return err
}

// synced is an error naming the informers that did not sync (none when the context ended first).
func synced[K comparable](result map[K]bool) error {
	var missing []string
	for informer, ok := range result {
		if !ok {
			missing = append(missing, fmt.Sprint(informer))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("informers not synced: %s", strings.Join(missing, ", "))
}
