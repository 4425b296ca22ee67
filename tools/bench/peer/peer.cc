// The benchmark peer: the stock gRPC C++ server with nothing but its default
// health service (grpc::EnableDefaultHealthCheckService), plaintext h2c.
// It answers grpc.health.v1.Health/Check for "" with SERVING.
//
// Usage: peer PORT [THREADS]
//   PORT     TCP port on 127.0.0.1 (0 picks one; the bound port is printed)
//   THREADS  completion-queue threads of the sync server (default: gRPC's own)
// Prints "listening address=127.0.0.1:PORT" once it serves; exits on SIGTERM/SIGINT.
#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>

// gRPC 1.51's builder refuses to start a server whose only service is the
// (callback-based) default health service ("At least one of the completion
// queues must be frequently polled"); a callback generic service that answers
// UNIMPLEMENTED for every other path makes it start, as an application's own
// services would.
class Unimplemented : public grpc::CallbackGenericService
{
    grpc::ServerGenericBidiReactor *CreateReactor(grpc::GenericCallbackServerContext *) override
    {
        class R : public grpc::ServerGenericBidiReactor
        {
          public:
            R()
            {
                Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, ""));
            }
            void OnDone() override
            {
                delete this;
            }
        };
        return new R;
    }
};

static volatile std::sig_atomic_t g_stop = 0;
static void on_signal(int)
{
    g_stop = 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    std::string addr = std::string("127.0.0.1:") + argv[1];
    grpc::EnableDefaultHealthCheckService(true);

    grpc::ServerBuilder builder;
    Unimplemented unimplemented;
    builder.RegisterCallbackGenericService(&unimplemented);
    int port = 0;
    builder.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
    if (argc > 2) {
        builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS,
                                    std::atoi(argv[2]));
    }
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || port == 0) {
        std::fprintf(stderr, "peer: cannot listen on %s\n", addr.c_str());
        return 1;
    }
    std::printf("listening address=127.0.0.1:%d\n", port);
    std::fflush(stdout);

    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    while (!g_stop)
        pause();
    server->Shutdown();
    return 0;
}
