/** A typical HVM guest's xl.cfg(5), as an operator writes it. */
export const TYPICAL_HVM_CFG = `name = "guest7"
builder = "hvm"
domid = 7
memory = 512
maxmem = 512
vcpus = 2
disk = [ 'file:/srv/guest7/disk.img,hda,w', '/srv/iso/install.iso,raw,hdc,ro,devtype=cdrom' ]
vif = [ 'mac=00:16:3e:00:00:07,bridge=xenbr0' ]
vnc = 1
vnclisten = "127.0.0.1"
vncdisplay = 7
serial = "pty"
boot = "dc"
videoram = 16
vga = "stdvga"
usb = 1
usbdevice = [ "tablet" ]
on_poweroff = "destroy"
on_reboot = "restart"
on_crash = "preserve"
dm_restrict = 1
device_model_version = "qemu-xen"
device_model_args = [ "-no-hpet" ]
`;
