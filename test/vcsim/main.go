// vcsim for ballast's tests: govmomi's vCenter simulator (Debian's golang-github-vmware-
// govmomi-dev) on loopback, with a given number of VMs and datastores, fixed credentials, and
// one addition: /ballast/deny makes vCenter answer NoPermission for changes to one object, as
// a real vCenter does for a user without the privilege.
//
// Build: CGO_ENABLED=0 GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim .
// Prints one JSON line when ready, serves until SIGTERM or SIGINT.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

type datastore struct {
	Name string `json:"name"`
	Moid string `json:"moid"`
	Dir  string `json:"dir"`
}

type vm struct {
	Name string `json:"name"`
	Moid string `json:"moid"`
	UUID string `json:"uuid"`
}

type ready struct {
	URL        string      `json:"url"`
	Datacenter string      `json:"datacenter"`
	Datastores []datastore `json:"datastores"`
	VMs        []vm        `json:"vms"`
}

// denied: managed object id -> privilege whose absence a change to it reports.
var (
	deniedLock sync.Mutex
	denied     = map[string]string{}
)

// Reads stay allowed: a user without a privilege can still look.
var readMethods = []string{"<RetrieveProperties", "<RetrievePropertiesEx", "<ContinueRetrievePropertiesEx", "<Login", "<Logout", "<RetrieveServiceContent"}

const noPermission = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Permission to perform this operation was denied.</faultstring><detail><NoPermissionFault xmlns="urn:vim25" xsi:type="NoPermission"><object type="VirtualMachine">%s</object><privilegeId>%s</privilegeId></NoPermissionFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`

func denyChanges(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sdk" && r.Method == http.MethodPost {
			body, _ := ioutil.ReadAll(r.Body)
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
			if moid, privilege, ok := deniedFor(string(body)); ok {
				w.Header().Set("Content-Type", "text/xml; charset=utf-8")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprintf(w, noPermission, moid, privilege)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func deniedFor(body string) (string, string, bool) {
	for _, m := range readMethods {
		if strings.Contains(body, m+" ") || strings.Contains(body, m+">") {
			return "", "", false
		}
	}
	deniedLock.Lock()
	defer deniedLock.Unlock()
	for moid, privilege := range denied {
		if strings.Contains(body, ">"+moid+"<") {
			return moid, privilege, true
		}
	}
	return "", "", false
}

func control(w http.ResponseWriter, r *http.Request) {
	moid := r.URL.Query().Get("moid")
	if r.Method != http.MethodPost || moid == "" {
		http.Error(w, "POST /ballast/deny?moid=vm-1&privilege=P or /ballast/allow?moid=vm-1", http.StatusBadRequest)
		return
	}
	deniedLock.Lock()
	defer deniedLock.Unlock()
	if strings.HasSuffix(r.URL.Path, "/deny") {
		denied[moid] = r.URL.Query().Get("privilege")
	} else {
		delete(denied, moid)
	}
	io.WriteString(w, "ok\n")
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on (loopback)")
	vms := flag.Int("vms", 2, "number of VMs")
	datastores := flag.Int("datastores", 2, "number of datastores")
	idle := flag.Duration("idle-timeout", 0, "drop sessions idle this long (0: never)")
	useTLS := flag.Bool("tls", false, "serve HTTPS with a self-signed certificate")
	certOut := flag.String("cert-out", "", "write the HTTPS certificate (PEM) here")
	username := flag.String("username", "ballast", "the one user that may log in")
	password := flag.String("password", "", "its password")
	methodDelay := flag.String("method-delay", "", "slow methods down, e.g. ReconfigVM_Task=5000 (ms; comma-separated)")
	flag.Parse()
	if *password == "" {
		log.Fatal("-password is required")
	}

	simulator.SessionIdleTimeout = *idle
	model := simulator.VPX()
	model.Host = 1
	model.Cluster = 0
	model.ClusterHost = 0
	model.Machine = *vms
	model.Datastore = *datastores
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()
	model.DelayConfig.MethodDelay = map[string]int{}
	for _, entry := range strings.Split(*methodDelay, ",") {
		var name string
		var ms int
		if entry == "" {
			continue
		}
		if _, err := fmt.Sscanf(strings.Replace(entry, "=", " ", 1), "%s %d", &name, &ms); err != nil {
			log.Fatalf("-method-delay %q: %v", entry, err)
		}
		model.DelayConfig.MethodDelay[name] = ms
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	model.Service.ServeMux.HandleFunc("/ballast/deny", control)
	model.Service.ServeMux.HandleFunc("/ballast/allow", control)
	server.Config.Handler = denyChanges(server.Config.Handler)

	if *useTLS && *certOut != "" {
		block := &pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw}
		if err := ioutil.WriteFile(*certOut, pem.EncodeToMemory(block), 0o644); err != nil {
			log.Fatal(err)
		}
	}

	out := ready{URL: strings.Replace(server.URL.String(), server.URL.User.String()+"@", "", 1)}
	for _, obj := range simulator.Map.All("Datacenter") {
		out.Datacenter = obj.(*simulator.Datacenter).Name
	}
	for _, obj := range simulator.Map.All("Datastore") {
		ds := obj.(*simulator.Datastore)
		out.Datastores = append(out.Datastores, datastore{ds.Name, ds.Self.Value, ds.Info.GetDatastoreInfo().Url})
	}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		machine := obj.(*simulator.VirtualMachine)
		out.VMs = append(out.VMs, vm{machine.Name, machine.Self.Value, machine.Config.Uuid})
	}
	sortByName(out)
	line, _ := json.Marshal(out)
	fmt.Println(string(line))

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	done := make(chan struct{})
	go func() { server.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second): // keep-alive clients may hold Close; the process ends anyway
	}
}

// Stable order, so tests can say "VM 0" and "datastore 1".
func sortByName(out ready) {
	for i := range out.VMs {
		for j := i + 1; j < len(out.VMs); j++ {
			if out.VMs[j].Name < out.VMs[i].Name {
				out.VMs[i], out.VMs[j] = out.VMs[j], out.VMs[i]
			}
		}
	}
	for i := range out.Datastores {
		for j := i + 1; j < len(out.Datastores); j++ {
			if out.Datastores[j].Name < out.Datastores[i].Name {
				out.Datastores[i], out.Datastores[j] = out.Datastores[j], out.Datastores[i]
			}
		}
	}
}
