package weft

import (
	"bytes"
	"fmt"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/wasi_http_outgoing_handler"
	"wit_component/wasi_http_types"
	"wit_component/wasi_io_streams"
)

// Request is an outbound HTTP request. The host lets it through only to
// hosts the plugin is granted.
type Request struct {
	Method  string // default GET
	URL     string // http:// or https://
	Headers map[string]string
	Body    []byte
}

// Response is an HTTP response, read whole.
type Response struct {
	Status  int
	Headers map[string][]string // lowercase names
	Body    []byte
}

// HTTP sends a request and reads the whole response. Its errors are step
// errors: an invalid URL is invalid input, a host the plugin is not
// granted fatal ("request denied"), a transport failure retryable.
func HTTP(r Request) (*Response, error) {
	https, authority, path, err := splitURL(r.URL)
	if err != nil {
		return nil, err
	}
	headers := wasi_http_types.MakeFields()
	for name, value := range r.Headers {
		if result := headers.Append(name, []byte(value)); result.IsErr() {
			return nil, InvalidInput(fmt.Sprintf("header %q is not allowed", name))
		}
	}
	request := wasi_http_types.MakeOutgoingRequest(headers)
	scheme := wasi_http_types.MakeSchemeHttp()
	if https {
		scheme = wasi_http_types.MakeSchemeHttps()
	}
	if request.SetMethod(method(r.Method)).IsErr() ||
		request.SetScheme(witTypes.Some(scheme)).IsErr() ||
		request.SetAuthority(witTypes.Some(authority)).IsErr() ||
		request.SetPathWithQuery(witTypes.Some(path)).IsErr() {
		return nil, InvalidInput(fmt.Sprintf("invalid url: %q was refused", r.URL))
	}
	bodyResult := request.Body()
	if bodyResult.IsErr() {
		return nil, Fatal("http body error: request body unavailable")
	}
	body := bodyResult.Ok()
	handled := wasi_http_outgoing_handler.Handle(request, witTypes.None[*wasi_http_types.RequestOptions]())
	if handled.IsErr() {
		return nil, httpError(handled.Err())
	}
	pending := handled.Ok()
	defer pending.Drop()
	// The body is written after handle(); a failure to write shows in the
	// response.
	if streamResult := body.Write(); streamResult.IsOk() {
		stream := streamResult.Ok()
		for chunk := r.Body; len(chunk) > 0; {
			n := min(len(chunk), 4096)
			if stream.BlockingWriteAndFlush(chunk[:n]).IsErr() {
				break
			}
			chunk = chunk[n:]
		}
		stream.Drop()
	}
	if finished := wasi_http_types.OutgoingBodyFinish(body, witTypes.None[*wasi_http_types.Fields]()); finished.IsErr() {
		return nil, httpError(finished.Err())
	}
	var response *wasi_http_types.IncomingResponse
	for {
		got := pending.Get()
		if got.IsSome() {
			outer := got.Some()
			if outer.IsErr() {
				return nil, Retryable("http transport error: response already taken")
			}
			inner := outer.Ok()
			if inner.IsErr() {
				return nil, httpError(inner.Err())
			}
			response = inner.Ok()
			break
		}
		pollable := pending.Subscribe()
		pollable.Block()
		pollable.Drop()
	}
	defer response.Drop()
	out := &Response{Status: int(response.Status()), Headers: map[string][]string{}}
	fields := response.Headers()
	for _, entry := range fields.Entries() {
		name := strings.ToLower(entry.F0)
		out.Headers[name] = append(out.Headers[name], string(entry.F1))
	}
	fields.Drop()
	consumed := response.Consume()
	if consumed.IsErr() {
		return nil, Fatal("http body error: response body unavailable")
	}
	incoming := consumed.Ok()
	streamResult := incoming.Stream()
	if streamResult.IsErr() {
		return nil, Fatal("http body error: response body stream unavailable")
	}
	stream := streamResult.Ok()
	var read bytes.Buffer
	for {
		chunk := stream.BlockingRead(64 << 10)
		if chunk.IsErr() {
			if chunk.Err().Tag() == wasi_io_streams.StreamError_Closed {
				break
			}
			return nil, Retryable("http transport error: reading the response body failed")
		}
		read.Write(chunk.Ok())
	}
	stream.Drop()
	wasi_http_types.IncomingBodyFinish(incoming).Drop()
	out.Body = read.Bytes()
	return out, nil
}

func splitURL(url string) (https bool, authority, path string, err error) {
	rest, found := strings.CutPrefix(url, "https://")
	https = found
	if !found {
		if rest, found = strings.CutPrefix(url, "http://"); !found {
			return false, "", "", InvalidInput(fmt.Sprintf("invalid url: %q must start with http:// or https://", url))
		}
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, path = rest[:end], rest[end:]
	if authority == "" {
		return false, "", "", InvalidInput(fmt.Sprintf("invalid url: %q has no host", url))
	}
	if hash := strings.IndexByte(path, '#'); hash >= 0 {
		path = path[:hash]
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return https, authority, path, nil
}

func method(name string) wasi_http_types.Method {
	switch strings.ToUpper(name) {
	case "", "GET":
		return wasi_http_types.MakeMethodGet()
	case "HEAD":
		return wasi_http_types.MakeMethodHead()
	case "POST":
		return wasi_http_types.MakeMethodPost()
	case "PUT":
		return wasi_http_types.MakeMethodPut()
	case "DELETE":
		return wasi_http_types.MakeMethodDelete()
	case "OPTIONS":
		return wasi_http_types.MakeMethodOptions()
	case "PATCH":
		return wasi_http_types.MakeMethodPatch()
	}
	return wasi_http_types.MakeMethodOther(strings.ToUpper(name))
}

func httpError(code wasi_http_types.ErrorCode) error {
	if code.Tag() == wasi_http_types.ErrorCode_HttpRequestDenied {
		return Fatal("request denied: the plugin is not granted this host")
	}
	return Retryable(fmt.Sprintf("http transport error: %s", errorName(code.Tag())))
}

// errorName is the WIT name of an error-code case.
func errorName(tag uint8) string {
	names := []string{
		"DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
		"destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
		"connection-terminated", "connection-timeout", "connection-read-timeout",
		"connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
		"TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
	}
	if int(tag) < len(names) {
		return names[tag]
	}
	return fmt.Sprintf("error code %d", tag)
}
