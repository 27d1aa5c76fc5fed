"""The ASN.1 of the standard DER encoding (``der``), as text: the one home of the schema.

It is the Uptane modules as POUF 1 publishes them (uptane/POUFs, ``POUF1.md``, "Uptane
Reference Implementation POUF", POUF 1 version 1, 2019-07-17, Uptane 1.0.0: the uptane/asn1
CommonModule, MetadataModule, RootModule, TargetsModule, SnapshotModule, TimestampModule,
MapFileModule and ECUModule), with AUTOMATIC TAGS, every type and field in its place, and
Standard 2.x additions made only where the modules have an extension marker (``...``),
as extension additions. docs/der-profile.md lists every departure and why.

:mod:`uptane.encoding.uptane_der` reads and writes DER by asn1crypto classes that mirror
this text field by field; ``tests/uptane/test_uptane_der_interop.py`` compiles this text
with an independent ASN.1 toolkit (asn1tools) and checks both directions for every message
type, and that docs/der-profile.md shows this very text.
"""

SCHEMA = """\
CommonModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  EXPORTS ALL;

  RoleType        ::= ENUMERATED {root, targets, snapshot, timestamp}

  -- String types. POUF 1: SIZE(1..32); our bounds are the Limits caps.
  Filename        ::= VisibleString (SIZE(1..MAX))
  StrictFilename  ::= VisibleString (SIZE(1..MAX))
  OctetString     ::= OCTET STRING  (SIZE(1..1024))
  Paths           ::= SEQUENCE OF Path
  Path            ::= VisibleString (SIZE(1..MAX))
  URLs            ::= SEQUENCE OF URL
  URL             ::= VisibleString (SIZE(1..1024))
  Identifier      ::= VisibleString (SIZE(1..MAX))

  Natural         ::= INTEGER (0..MAX)
  Positive        ::= INTEGER (1..MAX)
  Length          ::= Natural
  Threshold       ::= Positive
  Version         ::= Natural
  -- The date and time in UTC encoded as a UNIX timestamp.
  UTCDateTime     ::= Positive

  Hashes          ::= SEQUENCE OF Hash
  Hash            ::= SEQUENCE {
    function      HashFunction,
    digest        OctetString
  }
  HashFunction    ::= ENUMERATED {sha224, sha256, sha384, sha512, sha512-224,
                                  sha512-256, ...}

  Keyids          ::= SEQUENCE OF Keyid
  -- The SHA-256 of the TUF form of the key (its raw bytes).
  Keyid           ::= OctetString

  Signatures      ::= SEQUENCE OF Signature
  Signature       ::= SEQUENCE {
    keyid         Keyid,
    method        SignatureMethod,
    -- SHA-256 of the DER of the signed part: what the signature is made over.
    hash          Hash,
    value         OctetString
  }
  SignatureMethod ::= ENUMERATED {rsassa-pss, ed25519, ..., ecdsa-sha2-nistp256}

  PublicKeys      ::= SEQUENCE OF PublicKey
  PublicKey       ::= SEQUENCE {
    publicKeyid     Keyid,
    publicKeyType   PublicKeyType,
    -- ed25519: the 32 raw bytes; rsa, ecdsa: the DER SubjectPublicKeyInfo.
    publicKeyValue  OctetString
  }
  PublicKeyType   ::= ENUMERATED {rsa, ed25519, ..., ecdsa}
END

MetadataModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Length, Positive, RoleType, Signatures, UTCDateTime FROM CommonModule
          RootMetadata FROM RootModule
          TargetsMetadata FROM TargetsModule
          SnapshotMetadata FROM SnapshotModule
          TimestampMetadata FROM TimestampModule;

  Metadata      ::= SEQUENCE {
    signed              Signed,
    numberOfSignatures  Length,
    signatures          Signatures
  }
  Signed        ::= SEQUENCE {
    type        RoleType,
    expires     UTCDateTime,
    version     Positive,
    body        SignedBody
  }
  SignedBody    ::= CHOICE {
    rootMetadata      RootMetadata,
    targetsMetadata   TargetsMetadata,
    snapshotMetadata  SnapshotMetadata,
    timestampMetadata TimestampMetadata
  }
END

RootModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Keyids, Length, PublicKeys, RoleType, Threshold, URLs FROM CommonModule;

  RootMetadata ::= SEQUENCE {
    numberOfKeys  Length,
    keys          PublicKeys,
    numberOfRoles Length,
    roles         TopLevelRoles,
    ...,
    -- TUF: VERSION.NAME.EXT file names.
    consistentSnapshot  BOOLEAN DEFAULT FALSE
  }
  TopLevelRoles ::= SEQUENCE OF TopLevelRole
  TopLevelRole  ::= SEQUENCE {
    role            RoleType,
    -- TAP 5: The URLs pointing to the metadata file for this role.
    numberOfURLs    Length OPTIONAL,
    urls            URLs OPTIONAL,
    numberOfKeyids  Length,
    keyids          Keyids,
    threshold       Threshold,
    ...
  }
END

SnapshotModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Hashes, Length, StrictFilename, Version FROM CommonModule;

  SnapshotMetadata ::= SEQUENCE {
    numberOfSnapshotMetadataFiles Length,
    snapshotMetadataFiles         SnapshotMetadataFiles
  }
  SnapshotMetadataFiles ::= SEQUENCE OF SnapshotMetadataFile
  SnapshotMetadataFile ::= SEQUENCE {
    filename  StrictFilename,
    version   Version,
    ...,
    -- TUF: the optional length and hashes of the targets file.
    length    Length OPTIONAL,
    hashes    Hashes OPTIONAL
  }
END

TimestampModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Filename, Hashes, Length, Version FROM CommonModule;

  TimestampMetadata ::= SEQUENCE {
    filename        Filename,
    version         Version,
    length          Length,
    numberOfHashes  Length,
    hashes          Hashes,
    ...
  }
END

TargetsModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Filename, Hashes, Identifier, Keyid, Keyids, Length, Natural, OctetString,
          Paths, Positive, PublicKeys, StrictFilename, Threshold, URL FROM CommonModule;

  TargetsMetadata ::= SEQUENCE {
    -- Allowed to have no targets at all.
    numberOfTargets Natural,
    targets         Targets,
    delegations     TargetsDelegations OPTIONAL,
    ...,
    -- Standard 2.x (5.2.3.1): the Director's targets name the vehicle.
    vehicleIdentifier  Identifier OPTIONAL,
    -- Delegations the TAP 3 form above cannot hold (hardware ids, k of n roles, hash
    -- prefixes, succinct hash bins); present only instead of delegations.
    uptaneDelegations  UptaneDelegations OPTIONAL
  }

  Targets           ::= SEQUENCE OF TargetAndCustom
  TargetAndCustom   ::= SEQUENCE {
    target  Target,
    custom  Custom OPTIONAL
  }
  Target ::= SEQUENCE {
    filename        Filename,
    length          Length,
    numberOfHashes  Length,
    hashes          Hashes
  }
  Custom ::= SEQUENCE {
    releaseCounter        Natural OPTIONAL,
    hardwareIdentifier    Identifier OPTIONAL,
    ecuIdentifier         Identifier OPTIONAL,
    encryptedTarget       Target OPTIONAL,
    encryptedSymmetricKey EncryptedSymmetricKey OPTIONAL,
    ...,
    -- Standard 2.x: an image for several kinds of hardware, or for several ECUs.
    hardwareIdentifiers   SEQUENCE OF Identifier OPTIONAL,
    ecuIdentifiers        SEQUENCE OF EcuIdentifier OPTIONAL,
    -- How the image is encrypted, and its key wrapped to each ECU (5.2.3.1.1).
    encryptionMethod      VisibleString OPTIONAL,
    wrappedKeys           SEQUENCE OF EcuWrappedKey OPTIONAL,
    -- Where the Director says to download it (5.2.3.1).
    url                   URL OPTIONAL,
    -- A delta image: the patch this target is, and the images it joins.
    delta                 DeltaImage OPTIONAL,
    -- TUF canonical JSON (UTF-8) objects: the SHALL-match section, other custom fields.
    shallMatch            OCTET STRING OPTIONAL,
    otherCustom           OCTET STRING OPTIONAL
  }
  EncryptedSymmetricKey ::= SEQUENCE {
    encryptedSymmetricKeyType   EncryptedSymmetricKeyType,
    encryptedSymmetricKeyValue  OctetString
  }
  EncryptedSymmetricKeyType ::= ENUMERATED {aes128, aes192, aes256, ...}

  EcuIdentifier ::= SEQUENCE {
    ecuIdentifier       Identifier,
    hardwareIdentifier  Identifier
  }
  EcuWrappedKey ::= SEQUENCE {
    ecuIdentifier  Identifier,
    -- The id of the ECU encryption key the content key is wrapped to.
    keyid          Keyid,
    wrappedKey     OctetString
  }
  DeltaImage ::= SEQUENCE {
    format  VisibleString,
    base    Target,
    target  Target
  }

  -- https://github.com/theupdateframework/taps/blob/master/tap3.md
  TargetsDelegations  ::= SEQUENCE {
    numberOfKeys        Length,
    keys                PublicKeys,
    numberOfDelegations Length,
    delegations         PrioritizedPathsToRoles
  }
  PrioritizedPathsToRoles ::= SEQUENCE OF PathsToRoles
  PathsToRoles ::= SEQUENCE {
    numberOfPaths   Length,
    paths           Paths,
    numberOfRoles   Length,
    roles           MultiRoles,
    terminating     BOOLEAN DEFAULT FALSE
  }
  MultiRoles ::= SEQUENCE OF MultiRole
  MultiRole ::= SEQUENCE {
    rolename        StrictFilename,
    numberOfKeyids  Length,
    keyids          Keyids,
    threshold       Threshold
  }

  UptaneDelegations ::= SEQUENCE {
    keys           PublicKeys,
    roles          SEQUENCE OF UptaneDelegatedRole OPTIONAL,
    succinctRoles  SuccinctRoles OPTIONAL
  }
  UptaneDelegatedRole ::= SEQUENCE {
    rolename             StrictFilename,
    keyids               Keyids,
    threshold            Threshold,
    terminating          BOOLEAN DEFAULT FALSE,
    paths                Paths OPTIONAL,
    pathHashPrefixes     SEQUENCE OF VisibleString OPTIONAL,
    hardwareIdentifiers  SEQUENCE OF Identifier OPTIONAL,
    -- TAP 3 (5.4.4.8): this many of the roles must agree.
    minRolesInAgreement  Positive OPTIONAL,
    multiRoles           MultiRoles OPTIONAL
  }
  SuccinctRoles ::= SEQUENCE {
    keyids      Keyids,
    threshold   Threshold,
    bitLength   INTEGER (1..32),
    namePrefix  StrictFilename
  }
END

MapFileModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Length, Paths, StrictFilename, Threshold, URLs FROM CommonModule;

  -- https://github.com/theupdateframework/taps/blob/master/tap4.md
  MapFile ::= SEQUENCE {
    numberOfRepositories  Length,
    repositories          Repositories,
    numberOfMappings      Length,
    mappings              Mappings
  }
  -- POUF 1: SIZE(2); any number here.
  Repositories    ::= SEQUENCE OF Repository
  Repository      ::= SEQUENCE {
    name              RepositoryName,
    numberOfServers   Length,
    servers           URLs,
    ...
  }
  RepositoryNames ::= SEQUENCE OF RepositoryName
  RepositoryName  ::= StrictFilename
  Mappings ::= SEQUENCE OF Mapping
  Mapping  ::= SEQUENCE {
    numberOfPaths         Length,
    paths                 Paths,
    numberOfRepositories  Length,
    repositories          RepositoryNames,
    terminating           BOOLEAN DEFAULT FALSE,
    ...,
    -- TAP 4: how many of the repositories must agree; absent: all of them.
    threshold             Threshold OPTIONAL
  }
END

ECUModule DEFINITIONS AUTOMATIC TAGS ::= BEGIN
  IMPORTS Identifier, Length, Natural, Signatures, UTCDateTime FROM CommonModule
          Target FROM TargetsModule;

  VehicleVersionManifest ::= SEQUENCE {
    signed              VehicleVersionManifestSigned,
    numberOfSignatures  Length,
    signatures          Signatures
  }
  VehicleVersionManifestSigned ::= SEQUENCE {
    vehicleIdentifier           Identifier,
    primaryIdentifier           Identifier,
    numberOfECUVersionManifests Length,
    ecuVersionManifests         ECUVersionManifests,
    securityAttack              VisibleString (SIZE(1..1024)) OPTIONAL,
    ...,
    -- 5.3.2.1: the ECUs the Primary could not reach, named under its signature.
    unreachableEcus             SEQUENCE OF UnreachableEcu OPTIONAL,
    -- TUF canonical JSON (UTF-8) object of the fields the modules have no place for.
    otherFields                 OCTET STRING OPTIONAL
  }
  ECUVersionManifests ::= SEQUENCE OF ECUVersionManifest
  ECUVersionManifest ::= SEQUENCE {
    signed              ECUVersionManifestSigned,
    numberOfSignatures  Length,
    signatures          Signatures
  }
  ECUVersionManifestSigned ::= SEQUENCE {
    ecuIdentifier   Identifier,
    -- Standard 2.x: the latest verified secure time (currentTime), and the one before
    -- it (previousTime; equal to currentTime when the ECU reports none).
    previousTime    UTCDateTime,
    currentTime     UTCDateTime,
    securityAttack  VisibleString (SIZE(1..1024)) OPTIONAL,
    installedImage  Target,
    ...,
    -- 5.4.2.1.2: a nonce or a counter that changes every cycle (exactly one).
    nonce           OCTET STRING OPTIONAL,
    counter         Natural OPTIONAL,
    releaseCounter  Natural OPTIONAL,
    -- TUF canonical JSON (UTF-8) object of the fields the modules have no place for
    -- (a Secondary's hardware id, slots, last install result, ...).
    otherFields     OCTET STRING OPTIONAL
  }
  UnreachableEcu ::= SEQUENCE {
    ecuIdentifier  Identifier,
    reason         UTF8String,
    lastSeen       UTCDateTime OPTIONAL
  }
END
"""
