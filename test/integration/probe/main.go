// Command probe does what kubelet's gRPC liveness/readiness probe does
// (kubernetes pkg/probe/grpc): dial without TLS, call
// grpc.health.v1.Health/Check for one service under a deadline, with the
// user-agent kube-probe/<major>.<minor>. Exit 0 when the answer is SERVING;
// otherwise print why and exit 1 (failure) or 2 (usage).
//
// Built offline against Debian's golang-google-grpc-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o probe ./test/integration/probe
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "host:port of the gRPC server")
	service := flag.String("service", "", "service name to check (empty: the overall server)")
	timeout := flag.Duration("timeout", time.Second, "probe timeout (kubelet's timeoutSeconds, default 1s)")
	kubeVersion := flag.String("kube-version", "1.30", "kubelet version for the user-agent")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: probe -addr HOST:PORT [-service NAME] [-timeout 1s]")
		os.Exit(2)
	}

	// Kubelet: one context bounds both the dial and the RPC.
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	conn, err := grpc.DialContext(ctx, *addr,
		grpc.WithInsecure(),
		grpc.WithUserAgent(fmt.Sprintf("kube-probe/%s", *kubeVersion)),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", a)
		}),
	)
	if err != nil {
		if err == context.DeadlineExceeded {
			fmt.Printf("timeout: failed to connect service %q within %v: %v\n", *addr, *timeout, err)
		} else {
			fmt.Printf("error: failed to connect service at %q: %+v\n", *addr, err)
		}
		os.Exit(1)
	}
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		st, ok := status.FromError(err)
		switch {
		case ok && st.Code() == codes.Unimplemented:
			fmt.Printf("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): %s\n", st.Message())
		case ok && st.Code() == codes.DeadlineExceeded:
			fmt.Printf("timeout: health rpc did not complete within %v\n", *timeout)
		default:
			fmt.Printf("error: health rpc probe failed: %+v\n", err)
		}
		os.Exit(1)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		fmt.Printf("service unhealthy (responded with %q)\n", resp.GetStatus().String())
		os.Exit(1)
	}
	fmt.Printf("status: %s\n", resp.GetStatus().String())
}
