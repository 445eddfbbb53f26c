#!/bin/busybox sh
# PID 1 of the test guest: set up the minimum, run the DMA test once, power
# off.  Arguments for the test come from the kernel command line as
# dmatest.args=a,b,c (commas become spaces).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# uio_pci_generic gives user space the device's INTx interrupt.
insmod /lib/modules/uio.ko
insmod /lib/modules/uio_pci_generic.ko

args=""
for word in $(cat /proc/cmdline); do
    case "$word" in
        dmatest.args=*) args=$(echo "${word#dmatest.args=}" | tr ',' ' ') ;;
    esac
done

echo "DMATEST START args=$args"
/bin/dmatest $args
echo "DMATEST EXIT status=$?"
poweroff -f
