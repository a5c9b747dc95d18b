# A real server's nginx for the namespace beds (sourced by testbed.sh and lanbed.sh):
# `e2e_nginx NS DIR I "LISTEN..."` starts nginx in namespace NS with its files in DIR/ngI,
# answering "rsI" on every `listen` given (e.g. "80 [::]:80"), and serving DIR/files/ under
# /files/ (e2e_bigfile in checks.sh puts the 100 MB file there); `e2e_nginx_stop DIR I` stops it.

e2e_nginx() {
  local ns=$1 dir=$2/ng$3 i=$3 listen= l
  for l in $4; do listen="$listen listen $l;"; done
  mkdir -p "$dir"
  cat > "$dir/nginx.conf" <<NGINX
daemon on; worker_processes 1; pid $dir/nginx.pid; error_log stderr;
events { worker_connections 512; }
http { access_log off; client_body_temp_path $dir; proxy_temp_path $dir;
  fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { $listen location / { return 200 "rs$i\n"; } location /files/ { alias $2/files/; } } }
NGINX
  ip netns exec "$ns" nginx -c "$dir/nginx.conf" -e stderr
}

e2e_nginx_stop() {
  [ -f "$1/ng$2/nginx.pid" ] && kill "$(cat "$1/ng$2/nginx.pid")" 2>/dev/null
  return 0
}
