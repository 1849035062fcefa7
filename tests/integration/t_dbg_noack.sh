source "$(dirname "$0")/lib.sh"
read -r pc pf <<<"$(free_ports 2)"
dir3="$T/iii"; mkdir -p "$dir3"; conf3="$dir3/hastnbd.yaml"
PAIR_REPLICATION=${MODE:-fullsync} write_pair_config "$conf3" "127.0.0.1:$pc" "127.0.0.1:$pf"
create_resource "$conf3" a data >/dev/null
HOSTILE_READY="$T/r" timeout 60 $HASTNBD_PYTHON $LIB_DIR/hostile_peer.py secondary 127.0.0.1 $pf no_acks --deadline 30 > $T/na.json &
fake=$!
wait_for 10 ready test -e $T/r
start_daemon "$conf3" a data; make_primary "$conf3" a data
wait_peer_state "$conf3" a connected 10 || { cat $T/hastnbd-a.log; cat $T/na.json; }
sock3="$(nbd_socket "$conf3" a data)"
s=$(date +%s); timeout 25 qemu-io -f raw -c "write -P 0x5c 1048576 65536" "$(nbd_uri "$sock3" data)"; echo "qemu-io rc=$? after $(( $(date +%s)-s )) s"
status_field "$conf3" a '["peer"]'
wait $fake; cat $T/na.json
tail -5 $T/hastnbd-a.log
