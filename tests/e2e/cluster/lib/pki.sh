# shellcheck shell=bash
# Certificates, keys, tokens and kubeconfigs for the harness, sourced by cluster.sh: a CA, certificates it signs
# (30 days, RSA 2048), a service-account key pair, random tokens. Every file of a name NAME in the pki directory:
# NAME.key, NAME.csr, NAME.ext (its extensions), NAME.crt; keys are mode 600.

# pki_ca DIR CN: the CA (DIR/ca.key, DIR/ca.crt)
pki_ca() {
	mkdir -p "$1"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1/ca.key" -out "$1/ca.crt" -days 30 -subj "/CN=$2" 2>/dev/null
	chmod 600 "$1/ca.key"
}

# pki_cert DIR NAME SUBJECT EXTENSIONS: a key and a certificate signed by DIR's CA; EXTENSIONS as openssl's -extfile
# takes them, one per line (subjectAltName=..., extendedKeyUsage=serverAuth)
pki_cert() {
	local dir="$1" name="$2"
	printf '%s\n' "$4" >"$dir/$name.ext"
	openssl req -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$3" 2>/dev/null
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -out "$dir/$name.crt" \
		-days 30 -extfile "$dir/$name.ext" 2>/dev/null
	chmod 600 "$dir/$name.key"
}

# pki_keypair DIR NAME: an RSA key pair, DIR/NAME.key and DIR/NAME.pub (service-account token signing)
pki_keypair() {
	openssl genrsa -out "$1/$2.key" 2048 2>/dev/null
	openssl rsa -in "$1/$2.key" -pubout -out "$1/$2.pub" 2>/dev/null
	chmod 600 "$1/$2.key"
}

# pki_token: a random bearer token
pki_token() { openssl rand -hex 16; }

# pki_kubeconfig PATH SERVER CA_FILE USER TOKEN: a kubeconfig (mode 600) for USER with a bearer token
pki_kubeconfig() {
	cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: modelapi-e2e
  cluster:
    server: $2
    certificate-authority: $3
users:
- name: $4
  user:
    token: $5
contexts:
- name: modelapi-e2e
  context:
    cluster: modelapi-e2e
    user: $4
    namespace: default
current-context: modelapi-e2e
KC
	chmod 600 "$1"
}
