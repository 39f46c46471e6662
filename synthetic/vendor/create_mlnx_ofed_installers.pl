#!/usr/bin/perl
# A model of NVIDIA's create_mlnx_ofed_installers.pl (tests only): the yum group file (comps.xml) and
# the mlnx-ofed-<group> metadata packages of an MLNX_OFED directory, made from the <group>_packages.txt
# lists that mlnxofedinstall -p wrote into the RPMS directory.
#
# What it keeps of NVIDIA's: the options; the packages directory (RPMS, or RPMS/MLNX_LIBS and, with
# --upstream-libs, RPMS/UPSTREAM_LIBS in a split bundle); the names (mlnx-ofed-<group>, and
# mlnx-ofed-<group>-<kernel> with --kernel, except -user-only groups); Version and Release from .mlnx,
# the Release suffixed with the text of the `distro` file ('-' made '.'); "Requires: <name> >= <ver>" for
# every listed package present, "Requires: kmod-<name> >= <ver>" for KMP packages unless --kernel is given;
# kernel packages of other kernels left out; the rpms copied to --rpms-tdir, comps.xml to --output.
# What differs: one rpmbuild makes every group (NVIDIA's runs one per group), rpmbuild is given --nodeps
# and its own _dbpath so that it runs on a Debian test host, and the packages carry no scriptlets.
use strict;
use warnings;
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use File::Copy qw(copy);

my ($mofed, $output_dir, $rpms_tdir, $rpms, $tmpwd, $kernel, $build_num) = ("", "", "", "", "/tmp", "", "");
my ($upstream_libs, $with_hpc, $prefix) = (0, 0, "mlnx-ofed");
my (%allowed_groups, %ignore_groups);

sub usage {
    print STDERR "Usage: $0 --mofed DIR [--output DIR] [--rpms-tdir DIR] [--rpms-path DIR] [--tmpdir DIR]\n";
    print STDERR "\t[--kernel K] [--build-num N] [--upstream-libs] [--with-hpc] [--groups a,b] [--ignore-groups a,b]\n";
    exit 1;
}

while (@ARGV) {
    my $flag = shift @ARGV;
    if    ($flag eq "--mofed")         { $mofed = shift @ARGV; }
    elsif ($flag eq "--name")          { $prefix = shift @ARGV; }
    elsif ($flag eq "--output")        { $output_dir = shift @ARGV; }
    elsif ($flag eq "--rpms-tdir")     { $rpms_tdir = shift @ARGV; }
    elsif ($flag eq "--rpms-path")     { $rpms = shift @ARGV; }
    elsif ($flag eq "--with-hpc")      { $with_hpc = 1; }
    elsif ($flag eq "--tmpdir")        { $tmpwd = shift @ARGV; }
    elsif ($flag eq "--kernel")        { $kernel = shift @ARGV; }
    elsif ($flag eq "--build-num")     { $build_num = shift @ARGV; }
    elsif ($flag eq "--upstream-libs") { $upstream_libs = 1; }
    elsif ($flag eq "--groups")        { $allowed_groups{$_} = 1 for split(/,/, shift @ARGV); }
    elsif ($flag eq "--ignore-groups") { $ignore_groups{$_} = 1 for split(/,/, shift @ARGV); }
    else                               { usage(); }
}
usage() unless -d $mofed;
if ($rpms eq "") {
    $rpms = "$mofed/RPMS";
    $rpms .= ($upstream_libs ? "/UPSTREAM_LIBS" : "/MLNX_LIBS") if -d "$rpms/COMMON";
}
die "-E- '$rpms' dir does not exist!\n" unless -d $rpms;

sub slurp {
    my $file = shift;
    open(my $in, "<", $file) or die "-E- cannot read $file\n";
    local $/;
    my $text = <$in>;
    close($in);
    $text =~ s/\s+$//;
    return $text;
}

my ($version, $release) = split(/-/, slurp("$mofed/.mlnx"), 2);
die "-E- failed to get version!\n" unless $version and $release;
$version =~ s/_/./g;
$release =~ s/_/./g;
$release .= ".$build_num" if $build_num ne "";
(my $ofed_distro = slurp("$mofed/distro")) =~ s/-/./g;

make_path($tmpwd);
my $tmpdir = tempdir("mlnx.XXXXXXX", DIR => $tmpwd);
my $topdir = "$tmpdir/build";
my $logfile = "$tmpdir/log.txt";
$output_dir = "$tmpwd/mlnxcomps" if $output_dir eq "";
$rpms_tdir = "$tmpwd/tmp/mlnxcomps/rpms" if $rpms_tdir eq "";

my %hpc_packages = map { $_ => 1 } qw(mxm fca mpitests openmpi openshmem bupc mpi-selector mvapich2 libibprof
    ummunotify ummunotify-mlnx hcoll knem knem-dkms knem-modules);
my (%groups, %present, %kmps);

opendir(my $dir, $rpms) or die "-E- cannot list $rpms\n";
my @entries = sort readdir($dir);
closedir($dir);
my @lists = grep { /_packages\.txt$/ } @entries;
die "Error: no packages files were found in '$rpms' directory!\n" unless @lists;

print "Getting list of packages per group...\n";
for my $file (@lists) {
    (my $content = slurp("$rpms/$file")) =~ s/\n//g;
    next unless $content =~ m/OFED packages: (.*) Kernel modules:/;
    my @names = split(' ', $1);
    next unless @names;
    (my $group = $file) =~ s/_packages\.txt$//;
    next if %allowed_groups and not exists $allowed_groups{$group};
    next if %ignore_groups and exists $ignore_groups{$group};
    next if not $with_hpc and $group =~ /hpc/;
    my $name = ($kernel ne "" and $group !~ /user-only/) ? "$group-$kernel" : $group;
    my $description = "MLNX_OFED $group installer package";
    if ($group =~ /user-only/) {
        $description .= " (User Space packages only)";
    } else {
        $description .= $kernel eq "" ? " (with KMP support)" : " for kernel $kernel (without KMP support)";
    }
    $groups{$name}{description} = $description;
    for my $package (@names) {
        next if not $with_hpc and (exists $hpc_packages{$package} or $package =~ /mpitests/);
        next if $package =~ /debuginfo|debugsource|-dbg|ofed-docs/;
        next if $package =~ /fabric-collector|mlnx-nvme|libdisni|neohost-backend/;
        next if $package =~ /vma|sockperf/ and $group !~ /vma/i;
        $groups{$name}{packages}{$package} = 1;
    }
    $groups{$name}{packages}{mft} = 1 unless $group =~ /dpdk|kernel-only/;
}

print "Getting info about available binaries...\n";
(my $kernel_rpm = $kernel) =~ s/-/_/g;
my @packages = map { "$rpms/$_" } grep { /\.rpm$/ } @entries;
open(my $query, "-|", "rpm", "-qp", "--nosignature", "--nodigest", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n",
    @packages) or die "-E- cannot run rpm\n";
while (my $line = <$query>) {
    chomp $line;
    my ($name, $ver) = split(/ /, $line);
    if ($name =~ /kmp|kmod/) {
        next if $kernel ne "";
        (my $base = $name) =~ s/kmod-//;
        $base =~ s/-kmp-.*//;
        $kmps{$base}{$name} = $ver;
        next;
    }
    my $kernel_package = $name =~ /kernel|-modules$|^knem$|^iser$|^isert$|^srp$|^kernel-mft$/
        && $name !~ /mlnx-ofa_kernel-devel|mlnx-ofa_kernel$/;
    if ($kernel ne "" and $kernel_package and $ver !~ /\Q$kernel_rpm\E/) {
        warn "$name $ver <> $kernel_rpm\n";
        next;
    }
    next if $kernel eq "" and $kernel_package;
    $present{$name}{$ver} = 1;
}
close($query) or die "-E- rpm could not read the packages in $rpms\n";

sub requirements {
    my $group = shift;
    my @requires;
    for my $package (sort keys %{$groups{$group}{packages}}) {
        push @requires, "Requires: $package >= $_" for sort keys %{$present{$package} || {}};
        push @requires, "Requires: $_ >= $kmps{$package}{$_}" for sort keys %{$kmps{$package} || {}};
    }
    return join("\n", @requires);
}

make_path($output_dir);
open(my $comps, ">", "$output_dir/comps.xml") or die "Error: unable to open $output_dir/comps.xml for writing!\n";
print $comps "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<comps>\n";
for my $group (sort keys %groups) {
    (my $id = $group) =~ s/\s|\.|-/_/g;
    print $comps "  <group>\n    <id>$id</id>\n    <name>MLNX_OFED \U$group\E</name>\n    <default>true</default>\n";
    print $comps "    <description>$groups{$group}{description}</description>\n    <uservisible>true</uservisible>\n";
    print $comps "    <packagelist>\n";
    print $comps "      <packagereq type=\"default\">$_</packagereq>\n" for grep { exists $present{$_} }
        sort keys %{$groups{$group}{packages}};
    print $comps "      <packagereq type=\"default\">$prefix-$group</packagereq>\n    </packagelist>\n  </group>\n";
}
print $comps "</comps>\n";
close($comps);

my $spec = "Name: $prefix-metadata\nVersion: $version\nRelease: $release.$ofed_distro\n"
    . "Summary: MLNX_OFED installer packages\nLicense: GPLv2 or BSD\nUrl: http://mellanox.com\n"
    . "Vendor: Mellanox Technologies\nBuildArch: noarch\nAutoReqProv: no\n\n%description\nMLNX_OFED installers.\n";
my $install = "";
for my $group (sort keys %groups) {
    my $rpm_name = "$prefix-$group";
    my $requires = requirements($group);
    $spec .= "\n%package -n $rpm_name\nSummary: $groups{$group}{description}\nObsoletes: rdma\n$requires\n"
        . "%description -n $rpm_name\n$groups{$group}{description}\n"
        . "%files -n $rpm_name\n/usr/share/doc/$rpm_name\n";
    $install .= "mkdir -p %{buildroot}/usr/share/doc/$rpm_name\n"
        . "echo $rpm_name-$version > %{buildroot}/usr/share/doc/$rpm_name/$rpm_name-release\n";
}
$spec .= "\n%install\n$install";
make_path("$topdir/SPECS");
open(my $out, ">", "$topdir/SPECS/metadata.spec") or die "can't create spec file!\n";
print $out $spec;
close($out);

my @rpmbuild = ("rpmbuild", "-bb", "--target", "noarch", "--nodeps", "--define", "_topdir $topdir",
    "--define", "_dbpath $topdir/rpmdb", "$topdir/SPECS/metadata.spec");
open(my $saved_out, ">&", \*STDOUT) or die;
open(my $saved_err, ">&", \*STDERR) or die;
open(STDOUT, ">>", $logfile) or die "-E- cannot write $logfile\n";
open(STDERR, ">&", \*STDOUT) or die;
print "@rpmbuild\n";
my $status = system { $rpmbuild[0] } @rpmbuild;
open(STDOUT, ">&", $saved_out) or die;
open(STDERR, ">&", $saved_err) or die;
if ($status != 0) {
    print "Failed command: @rpmbuild\n";
    print "See: $logfile\n";
    exit 1;
}
make_path($rpms_tdir);
opendir(my $built, "$topdir/RPMS/noarch") or die;
for my $file (sort grep { /\.rpm$/ } readdir($built)) {
    copy("$topdir/RPMS/noarch/$file", "$rpms_tdir/$file") or die "-E- cannot copy $file\n";
    print "Built $file\n";
}
closedir($built);
remove_tree($tmpdir);
exit 0;
