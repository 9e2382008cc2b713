// A type: go worker for TQServer's tests, built as the original TQServer
// built them: go build -o bin/{name} ./src.
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	port := os.Getenv("WORKER_PORT")
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "go v1 %s %s\n", os.Getenv("WORKER_NAME"), r.URL.Path)
	})
	fmt.Println("go worker on", port)
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
