// The Go TQServer's kind of Go worker: net/http on $WORKER_PORT.
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "index %s path=%s gomaxprocs=%s gomemlimit=%s\n",
			os.Getenv("WORKER_NAME"), r.URL.Path, os.Getenv("GOMAXPROCS"), os.Getenv("GOMEMLIMIT"))
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("WORKER_PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
