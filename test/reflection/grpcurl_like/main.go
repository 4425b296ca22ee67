// Command grpcurl_like does what `grpcurl -plaintext HOST:PORT list` and
// `grpcurl -plaintext HOST:PORT describe [SYMBOL]` do, through server
// reflection only (no .proto files): grpcurl is not packaged in Debian 12, so
// the integration tests use this instead.
//
// Every answer is checked the way a reflection client relies on it: each
// service and symbol is resolved to its file and all of that file's imports,
// loaded into a protodesc registry (which fails on a missing or inconsistent
// file), and a response must not carry the same file twice. Any failure, an
// error_response included, exits 1; bad usage exits 2.
//
// It speaks grpc.reflection.v1alpha (the client in Debian's grpc-go 1.33) or,
// with -v1, grpc.reflection.v1: grpc-go 1.33 has no v1 client, but the two are
// wire-identical, so the v1alpha messages are sent on the v1 method path.
//
// Built offline against Debian's golang-google-grpc-dev and
// golang-google-protobuf-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o grpcurl_like ./test/reflection/grpcurl_like
//
// Usage:
//
//	grpcurl_like [-addr HOST:PORT] [-v1] [-timeout 10s] list [SERVICE]
//	grpcurl_like [-addr HOST:PORT] [-v1] [-timeout 10s] describe [SYMBOL]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

const (
	v1alphaMethod = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
	v1Method      = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
)

// client is one reflection stream plus the files it has fetched.
type client struct {
	stream grpc.ClientStream
	host   string
	files  map[string]*descriptorpb.FileDescriptorProto
}

func newClient(ctx context.Context, cc *grpc.ClientConn, method, host string) (*client, error) {
	desc := &grpc.StreamDesc{StreamName: "ServerReflectionInfo", ServerStreams: true, ClientStreams: true}
	s, err := cc.NewStream(ctx, desc, method)
	if err != nil {
		return nil, err
	}
	return &client{stream: s, host: host, files: map[string]*descriptorpb.FileDescriptorProto{}}, nil
}

// ask sends one request and reads its one response, checking the echo.
func (c *client) ask(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
	req.Host = c.host
	if err := c.stream.SendMsg(req); err != nil {
		// io.EOF: the server ended the stream; its status comes from RecvMsg (grpc-go's rule).
		if err == io.EOF {
			if rerr := c.stream.RecvMsg(new(rpb.ServerReflectionResponse)); rerr != nil && rerr != io.EOF {
				err = rerr
			}
		}
		return nil, fmt.Errorf("send: %w", err)
	}
	resp := new(rpb.ServerReflectionResponse)
	if err := c.stream.RecvMsg(resp); err != nil {
		return nil, fmt.Errorf("recv: %w", err)
	}
	if e := resp.GetErrorResponse(); e != nil {
		return nil, fmt.Errorf("server error %d: %s", e.ErrorCode, e.ErrorMessage)
	}
	if o := resp.GetOriginalRequest(); o == nil || o.String() != req.String() {
		return nil, fmt.Errorf("original_request not echoed: sent %v, got %v", req, o)
	}
	return resp, nil
}

// close half-closes and expects the server to end the stream with OK.
func (c *client) close() error {
	if err := c.stream.CloseSend(); err != nil {
		return err
	}
	var extra rpb.ServerReflectionResponse
	if err := c.stream.RecvMsg(&extra); err != io.EOF {
		if err == nil {
			return errors.New("unexpected response after half-close")
		}
		return fmt.Errorf("stream did not end OK: %w", err)
	}
	return nil
}

func (c *client) listServices() ([]string, error) {
	resp, err := c.ask(&rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	if err != nil {
		return nil, err
	}
	l := resp.GetListServicesResponse()
	if l == nil {
		return nil, errors.New("list_services: no list_services_response")
	}
	var names []string
	for _, s := range l.Service {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return names, nil
}

// addFiles decodes a file_descriptor_response, refusing a file sent twice in one answer.
func (c *client) addFiles(resp *rpb.ServerReflectionResponse, what string) (string, error) {
	fr := resp.GetFileDescriptorResponse()
	if fr == nil || len(fr.FileDescriptorProto) == 0 {
		return "", fmt.Errorf("%s: no file_descriptor_response", what)
	}
	seen := map[string]bool{}
	first := ""
	for _, b := range fr.FileDescriptorProto {
		fd := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(b, fd); err != nil {
			return "", fmt.Errorf("%s: bad FileDescriptorProto: %w", what, err)
		}
		if seen[fd.GetName()] {
			return "", fmt.Errorf("%s: file %s sent twice", what, fd.GetName())
		}
		seen[fd.GetName()] = true
		if first == "" {
			first = fd.GetName()
		}
		c.files[fd.GetName()] = fd
	}
	return first, nil
}

// complete fetches, by file_by_filename, any import not received yet.
func (c *client) complete(name string) error {
	fd, ok := c.files[name]
	if !ok {
		resp, err := c.ask(&rpb.ServerReflectionRequest{
			MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name}})
		if err != nil {
			return fmt.Errorf("file_by_filename %s: %w", name, err)
		}
		first, err := c.addFiles(resp, "file_by_filename "+name)
		if err != nil {
			return err
		}
		if first != name {
			return fmt.Errorf("file_by_filename %s: answered %s first", name, first)
		}
		fd = c.files[name]
	}
	for _, dep := range fd.Dependency {
		if err := c.complete(dep); err != nil {
			return err
		}
	}
	return nil
}

// resolve loads the file defining symbol with all its imports into a registry.
func (c *client) resolve(symbol string) (protoreflect.Descriptor, error) {
	resp, err := c.ask(&rpb.ServerReflectionRequest{
		MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}})
	if err != nil {
		return nil, fmt.Errorf("file_containing_symbol %s: %w", symbol, err)
	}
	first, err := c.addFiles(resp, "file_containing_symbol "+symbol)
	if err != nil {
		return nil, err
	}
	if err := c.complete(first); err != nil {
		return nil, err
	}
	reg, err := c.registry()
	if err != nil {
		return nil, err
	}
	d, err := reg.FindDescriptorByName(protoreflect.FullName(symbol))
	if err != nil {
		return nil, fmt.Errorf("%s: not in the files the server sent: %w", symbol, err)
	}
	if d.ParentFile().Path() != first {
		return nil, fmt.Errorf("%s: defined in %s, server answered %s", symbol, d.ParentFile().Path(), first)
	}
	return d, nil
}

func (c *client) registry() (*protoregistry.Files, error) {
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range c.files {
		set.File = append(set.File, fd)
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("building the registry: %w", err)
	}
	return reg, nil
}

// ---- printing, in grpcurl's shape ----

func typeName(f protoreflect.FieldDescriptor) string {
	switch f.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return "." + string(f.Message().FullName())
	case protoreflect.EnumKind:
		return "." + string(f.Enum().FullName())
	}
	return f.Kind().String()
}

func fieldLine(f protoreflect.FieldDescriptor) string {
	if f.IsMap() {
		return fmt.Sprintf("map<%s, %s> %s = %d;", typeName(f.MapKey()), typeName(f.MapValue()), f.Name(), f.Number())
	}
	label := ""
	if f.Cardinality() == protoreflect.Repeated {
		label = "repeated "
	} else if f.Syntax() == protoreflect.Proto2 {
		label = f.Cardinality().String() + " "
	}
	return fmt.Sprintf("%s%s %s = %d;", label, typeName(f), f.Name(), f.Number())
}

func methodLine(m protoreflect.MethodDescriptor) string {
	in, out := "", ""
	if m.IsStreamingClient() {
		in = "stream "
	}
	if m.IsStreamingServer() {
		out = "stream "
	}
	return fmt.Sprintf("rpc %s ( %s.%s ) returns ( %s.%s );", m.Name(), in, m.Input().FullName(), out, m.Output().FullName())
}

func writeMessage(b *strings.Builder, m protoreflect.MessageDescriptor, indent string) {
	fmt.Fprintf(b, "%smessage %s {\n", indent, m.Name())
	for i := 0; i < m.Fields().Len(); i++ {
		fmt.Fprintf(b, "%s  %s\n", indent, fieldLine(m.Fields().Get(i)))
	}
	for i := 0; i < m.Messages().Len(); i++ {
		if !m.Messages().Get(i).IsMapEntry() {
			writeMessage(b, m.Messages().Get(i), indent+"  ")
		}
	}
	for i := 0; i < m.Enums().Len(); i++ {
		writeEnum(b, m.Enums().Get(i), indent+"  ")
	}
	fmt.Fprintf(b, "%s}\n", indent)
}

func writeEnum(b *strings.Builder, e protoreflect.EnumDescriptor, indent string) {
	fmt.Fprintf(b, "%senum %s {\n", indent, e.Name())
	for i := 0; i < e.Values().Len(); i++ {
		v := e.Values().Get(i)
		fmt.Fprintf(b, "%s  %s = %d;\n", indent, v.Name(), v.Number())
	}
	fmt.Fprintf(b, "%s}\n", indent)
}

func describe(d protoreflect.Descriptor) string {
	var b strings.Builder
	switch d := d.(type) {
	case protoreflect.ServiceDescriptor:
		fmt.Fprintf(&b, "%s is a service:\nservice %s {\n", d.FullName(), d.Name())
		for i := 0; i < d.Methods().Len(); i++ {
			fmt.Fprintf(&b, "  %s\n", methodLine(d.Methods().Get(i)))
		}
		b.WriteString("}\n")
	case protoreflect.MethodDescriptor:
		fmt.Fprintf(&b, "%s is a method:\n%s\n", d.FullName(), methodLine(d))
	case protoreflect.MessageDescriptor:
		fmt.Fprintf(&b, "%s is a message:\n", d.FullName())
		writeMessage(&b, d, "")
	case protoreflect.EnumDescriptor:
		fmt.Fprintf(&b, "%s is an enum:\n", d.FullName())
		writeEnum(&b, d, "")
	case protoreflect.EnumValueDescriptor:
		fmt.Fprintf(&b, "%s is an enum value:\n%s = %d;\n", d.FullName(), d.Name(), d.Number())
	case protoreflect.FieldDescriptor:
		fmt.Fprintf(&b, "%s is a field:\n%s\n", d.FullName(), fieldLine(d))
	default:
		fmt.Fprintf(&b, "%s is a %T\n", d.FullName(), d)
	}
	return b.String()
}

func run(ctx context.Context, c *client, cmd string, args []string) error {
	switch {
	case cmd == "list" && len(args) == 0:
		names, err := c.listServices()
		if err != nil {
			return err
		}
		// grpcurl prints the names only; resolving each too checks what describe will need.
		for _, n := range names {
			if _, err := c.resolve(n); err != nil {
				return err
			}
			fmt.Println(n)
		}
	case cmd == "list" && len(args) == 1:
		d, err := c.resolve(args[0])
		if err != nil {
			return err
		}
		s, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return fmt.Errorf("%s is not a service", args[0])
		}
		for i := 0; i < s.Methods().Len(); i++ {
			fmt.Println(s.Methods().Get(i).FullName())
		}
	case cmd == "describe" && len(args) <= 1:
		symbols := args
		if len(symbols) == 0 {
			names, err := c.listServices()
			if err != nil {
				return err
			}
			symbols = names
		}
		for _, sym := range symbols {
			d, err := c.resolve(sym)
			if err != nil {
				return err
			}
			fmt.Print(describe(d))
		}
	default:
		return errUsage
	}
	return c.close()
}

var errUsage = errors.New("usage: grpcurl_like [-addr HOST:PORT] [-v1] [-timeout D] list [SERVICE] | describe [SYMBOL]")

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "host:port of the gRPC server (plaintext h2c)")
	v1 := flag.Bool("v1", false, "use grpc.reflection.v1 instead of v1alpha")
	timeout := flag.Duration("timeout", 10*time.Second, "overall deadline")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, errUsage)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cc, err := grpc.DialContext(ctx, *addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcurl_like: dial %s: %v\n", *addr, err)
		os.Exit(1)
	}
	defer cc.Close()
	method := v1alphaMethod
	if *v1 {
		method = v1Method
	}
	c, err := newClient(ctx, cc, method, *addr)
	if err == nil {
		err = run(ctx, c, flag.Arg(0), flag.Args()[1:])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcurl_like: %v\n", err)
		if err == errUsage {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
