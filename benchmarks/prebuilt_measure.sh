#!/bin/bash
# Issue 15: publish arm64 (NNPACK graph + MXNet + wheel) to a loopback conan_server, then build arm64
# in an empty home with only the remote configured; time it.
set -euo pipefail
SRV=/tmp/conan-srv; rm -rf $SRV; mkdir -p $SRV
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > $SRV/server.conf <<CONF
[server]
jwt_secret: $(openssl rand -hex 16)
jwt_expire_minutes: 120
ssl_enabled: False
port: $PORT
public_port:
host_name: 127.0.0.1
authorize_timeout: 1800
disk_storage_path: $SRV/data
disk_authorize_timeout: 1800
updown_secret: $(openssl rand -hex 16)

[write_permissions]
*/*@*/*: demo

[read_permissions]
*/*@*/*: *

[users]
demo: demopass
CONF
CONAN_SERVER_HOME=$SRV ${CONAN_SERVER_PYTHON:?set CONAN_SERVER_PYTHON to the python of a venv with conan-server} -c "import os; from conans.server.launcher import ServerLauncher; ServerLauncher(server_dir=os.environ['CONAN_SERVER_HOME']).server.run(host='127.0.0.1')" > $SRV/log 2>&1 &
echo $! > $SRV/pid
sleep 5
URL=http://127.0.0.1:$PORT
echo "server $URL"
cd "$(dirname "$0")/.."
MXNET_SRC=${MXNET_SRC:?set MXNET_SRC to an MXNet 1.9.1 tree with its submodules}
start=$(date +%s.%N)
NNTC_CONAN_PASSWORD=demopass python3 -m invoke publish --arch arm64 --remote team --url $URL --user demo --source mxnet=$MXNET_SRC
echo "publish took $(python3 -c "print(round($(date +%s.%N)-$start,1))") s"
HOME2=$(mktemp -d /tmp/empty-home.XXXX)
echo "empty home $HOME2"
python3 -m invoke use-remote --remote team --url $URL --home $HOME2
start=$(date +%s.%N)
python3 -m invoke build --arch arm64 --home $HOME2 --source mxnet=$MXNET_SRC --report $HOME2/report.json --prebuilt require
echo "build in the empty home took $(python3 -c "print(round($(date +%s.%N)-$start,1))") s"
python3 -m invoke use-remote --remove team  # the default home must not keep a remote that stops with this script
kill $(cat $SRV/pid)
