#!/bin/busybox sh
# PID 1 of the test guest: set up the minimum, run the DMA test once, power
# off.  Arguments for the test come from the kernel command line as
# dmatest.args=a,b,c (commas become spaces).
#
# With nettest.url=http://HOST:PORT/PATH on the command line the guest also
# brings up its e1000 NIC with DHCP and, for as long as the DMA test runs,
# fetches that URL over and over, printing one line per fetch:
#   NETTEST GET n bytes=B sha256=H dma-running=yes|no
# (dma-running: the DMA test was still running when the fetch ended).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# uio_pci_generic gives user space the device's INTx interrupt.
insmod /lib/modules/uio.ko
insmod /lib/modules/uio_pci_generic.ko

args=""
url=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        dmatest.args=*) args=$(echo "${word#dmatest.args=}" | tr ',' ' ') ;;
        nettest.url=*) url=${word#nettest.url=} ;;
    esac
done

net_up() {
    insmod /lib/modules/e1000.ko || return 1
    cat > /bin/udhcpc-script <<'EOF'
#!/bin/sh
case "$1" in
bound|renew)
    ifconfig "$interface" "$ip" netmask "$subnet" up
    [ -n "$router" ] && route add default gw "$router" dev "$interface"
    echo "NETTEST DHCP ip=$ip router=$router" > /dev/console
    ;;
esac
exit 0
EOF
    chmod 755 /bin/udhcpc-script
    ifconfig lo 127.0.0.1 up
    ifconfig eth0 up || return 1
    # -n: give up (after -t tries of -T seconds) instead of waiting forever
    udhcpc -i eth0 -s /bin/udhcpc-script -q -n -t 5 -T 2 >/dev/null
}

if [ -n "$url" ]; then
    if ! net_up; then
        echo "NETTEST ERROR network setup failed"
        url=""
    fi
fi

echo "DMATEST START args=$args"
mkdir -p /tmp
# The status file appears when the DMA test has finished.
(/bin/dmatest $args; echo $? > /tmp/dmatest.status) &
if [ -n "$url" ]; then
    n=0
    # At least one fetch, then more while the DMA test runs (at most 100).
    while [ $n -eq 0 ] || { [ ! -e /tmp/dmatest.status ] && [ $n -lt 100 ]; }; do
        n=$((n + 1))
        rm -f /tmp/fetched
        # (no wget -T: it crashes the static busybox of Debian 12)
        if timeout 20 wget -q -O /tmp/fetched "$url" 2>/tmp/wget.err; then
            running=yes
            [ -e /tmp/dmatest.status ] && running=no
            echo "NETTEST GET $n bytes=$(wc -c < /tmp/fetched)" \
                 "sha256=$(sha256sum /tmp/fetched | cut -d' ' -f1) dma-running=$running"
        else
            echo "NETTEST ERROR fetch $n of $url failed: $(cat /tmp/wget.err)"
            break
        fi
    done
fi
wait
echo "DMATEST EXIT status=$(cat /tmp/dmatest.status)"
poweroff -f
