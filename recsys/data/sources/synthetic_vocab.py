"""Word pools for the synthetic catalog: genre-specific vocabulary gives text embeddings signal."""

from __future__ import annotations

# (raw Amazon-style category label, genre-specific words). The labels are what a real
# Movies & TV metadata file carries, so the category map is exercised by the default data.
GENRES: tuple[tuple[str, str], ...] = (
    ("Action & Adventure", "explosion chase mercenary showdown heist rescue bullet agent vengeance commando"),
    ("Adventure", "expedition treasure jungle voyage quest island explorer map compass canyon"),
    ("Animation", "animated cartoon talking critter doodle pixel sketch colorful puppet toon"),
    ("Anime & Manga", "ninja samurai mecha shinobi spirit tokyo academy ronin katana shonen"),
    ("Classics", "vintage golden silent noir starlet matinee classic gramophone ballroom reel"),
    ("Comedy", "hilarious prank wacky roommate blunder sitcom goofy awkward wedding slapstick"),
    ("Crime", "mobster detective heist gangster cartel precinct robbery con fraud alibi"),
    ("Documentary", "true investigation archival interview history science biography nature expose footage"),
    ("Drama", "family grief redemption struggle courtroom memoir tragedy betrayal legacy healing"),
    ("Educational", "lesson learning classroom tutorial alphabet math lecture study course teacher"),
    ("Faith & Spirituality", "faith prayer miracle church gospel bible pilgrim hope grace angel"),
    ("Kids & Family", "puppy pony birthday playground treehouse sleepover cookie unicorn giggle bedtime"),
    ("Fantasy", "wizard dragon sorcery enchanted kingdom elf prophecy spell castle realm"),
    ("Exercise & Fitness", "workout yoga cardio pilates stretch abs toning strength routine trainer"),
    ("Holidays & Seasonal", "christmas santa snowman holiday reindeer elves sleigh mistletoe carol ornament"),
    ("Horror", "haunted ghost curse demon nightmare zombie crypt possession scream slasher"),
    (
        "Independently Distributed",
        "indie festival lowbudget arthouse quirky handheld drifter diner roadtrip basement",
    ),
    ("Art House & International", "paris madrid berlin subtitles cinema villa amour riviera café seine"),
    ("LGBTQ", "pride coming-out queer identity drag ballroom acceptance partner rainbow chosen-family"),
    ("Military & War", "battalion soldier trench bomber frontline sergeant warfare platoon invasion medal"),
    ("Music Videos & Concerts", "concert guitar tour live band encore stadium rockstar album setlist"),
    (
        "Musicals & Performing Arts",
        "broadway ballet musical stage opera choreography chorus duet overture curtain",
    ),
    ("Mystery & Thrillers", "whodunit clue suspect manor murder sleuth riddle inspector secret locked-room"),
    ("Romance", "love kiss romance heartbreak proposal soulmate valentine courtship wedding affair"),
    ("Science Fiction", "spaceship alien galaxy robot android starship cyborg planet wormhole laser"),
    ("Sports", "championship coach stadium rookie boxing baseball quarterback underdog league trophy"),
    ("Suspense", "stalker conspiracy paranoia hostage fugitive psychological countdown spy assassin ransom"),
    ("TV Series", "season episode pilot finale miniseries showrunner binge sitcom cliffhanger spinoff"),
    ("Westerns", "cowboy sheriff saloon outlaw ranch frontier gunslinger posse stagecoach desert"),
    (
        "Military & War",
        "wwii resistance submarine general occupation allied regiment siege armistice spitfire",
    ),
)

COMMON_WORDS = (
    "story life night city world journey secret return last first dark light time heart home road "
    "dream fire shadow truth edge game house brothers sisters friends stranger promise summer winter"
).split()
FIRST_NAMES = (
    "James Maria Kenji Amélie Chloé Diego Olga Priya Liam Sofia Noah Emma Lucas Mia Ethan Zoë "
    "Hiro Ingrid Omar Fatima Pierre Björn Elena Raj Anya Tomás Grace Leo Nadia Felix"
).split()
LAST_NAMES = (
    "Smith García Tanaka Müller Rossi Dubois Ivanova Kowalski Nguyen Patel Johnson Silva Kim Larsen "
    "O'Brien Novak Haddad Moreau Fischer Costa Brennan Sato Jensen Romero Lindqvist Okafor Chen Weber"
).split()
STUDIOS = (
    "Lionsgate|Warner Home Video|Universal Studios|Criterion|A24|Paramount|Sony Pictures|Studio Ghibli|"
    "BBC|HBO|Miramax|Focus Features|Independent Films|Magnolia|Shout! Factory"
).split("|")
FORMATS = ("DVD", "Blu-ray", "Prime Video", "4K", "Multi-Format", "NTSC")
LANGUAGES = ("English", "English", "English", "French", "Spanish", "Japanese", "German", "Korean")
STORE_LABELS = ("Movies & TV", "Genre for Featured Categories", "Boxed Sets", "Blu-ray", "Studio Specials")
REVIEW_PHRASES = (
    "Great movie|Loved it|Not bad|Five stars|Would watch again|A classic|Disappointing ending|"
    "Fantastic acting|Kids loved it|Worth every penny|Solid entertainment|Beautiful cinematography"
).split("|")
