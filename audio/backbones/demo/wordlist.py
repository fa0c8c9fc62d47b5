"""Hand-written English word lists for the sentence generator, split by part of speech.

Each constant is a whitespace-separated string (lowercase a-z, apostrophe, hyphen). Nouns are singular;
plurals come from the usual spelling rules plus IRREGULAR_PLURALS. Verbs are bases; their forms come from
the spelling rules plus IRREGULAR_VERBS ("base past participle" per line).
"""

# ------------------------------------------------------------------------------------------- nouns

PEOPLE = """
teacher doctor nurse farmer baker driver pilot student child baby boy girl man woman friend neighbor
brother sister mother father uncle aunt cousin grandmother grandfather parent king queen prince princess
artist singer dancer writer painter soldier sailor captain chef cook waiter waitress lawyer judge officer
guard worker builder engineer scientist professor tourist stranger visitor guest host player coach runner
swimmer climber hunter fisherman gardener plumber mechanic poet actor actress musician drummer pianist
photographer reporter editor author banker clerk manager boss partner husband wife kid teenager adult
lady gentleman nephew niece daughter son twin leader member citizen hero villain wizard giant knight
thief pirate shepherd carpenter tailor butcher librarian dentist surgeon vet firefighter detective
explorer inventor astronaut magician clown juggler referee umpire cashier janitor receptionist
secretary mayor president senator ambassador neighbor roommate classmate colleague customer passenger
patient traveler shopkeeper landlord tenant volunteer beginner expert champion winner loser rival
"""

ANIMALS = """
dog cat horse cow pig sheep goat chicken duck goose rabbit mouse rat fox wolf bear lion tiger
elephant monkey giraffe zebra deer moose snake frog toad turtle fish whale dolphin shark owl eagle
hawk crow parrot pigeon sparrow robin swan bee ant spider butterfly moth beetle squirrel hamster puppy
kitten pony donkey camel kangaroo penguin seal otter beaver bat lizard crab lobster octopus snail worm
bird calf lamb bull ox hedgehog badger raccoon skunk koala panda gorilla leopard cheetah rhino hippo
flamingo peacock ostrich pelican seagull woodpecker goldfish salmon tuna jellyfish starfish mosquito
"""

THINGS = """
book pen pencil letter cup mug glass plate bowl spoon fork knife bottle box bag basket chair table
desk bed sofa lamp clock watch mirror window door key lock phone radio camera computer screen keyboard
ticket map coin wallet purse umbrella hat coat jacket shirt dress skirt sock shoe boot glove scarf belt
ring necklace button blanket pillow towel candle bucket ladder hammer nail rope wire bell drum guitar
piano violin flute trumpet ball kite doll toy puzzle balloon card gift present picture photo painting
poster newspaper magazine notebook envelope stamp package parcel bicycle car bus train truck boat ship
plane rocket wagon tractor helmet tent flag sign fence gate wall roof floor ceiling chimney shelf drawer
cupboard oven stove fridge kettle pan pot jar lid tray napkin saw shovel axe needle brush comb bench
engine wheel tire battery bulb cable switch plug speaker microphone laptop tablet printer sweater
backpack suitcase pocket zipper bracelet earring diamond crown sword shield arrow bow trophy medal
statue vase rug carpet curtain cushion mattress bathtub sink faucet hose sprinkler mailbox doorbell
calendar diary dictionary novel album guitar whistle compass telescope magnet robot rocket skateboard
sled canoe kayak raft anchor sail paddle lantern flashlight match torch stone rock pebble shell feather
leaf branch flower rose tulip daisy tree bush seed acorn log stick brick tile bolt screw spring chain
"""

FOOD = """
apple banana orange pear peach plum grape lemon cherry strawberry melon potato tomato carrot onion
pepper bean pea cabbage lettuce cucumber mushroom egg sandwich cookie cake pie muffin biscuit cracker
sausage burger pizza noodle dumpling pancake waffle candy cupcake doughnut pretzel bagel taco
pumpkin watermelon pineapple coconut avocado apricot raspberry blueberry walnut peanut almond olive
"""

MASS_NOUNS = """
water milk bread rice soup cheese butter tea coffee juice honey sugar salt flour jam pasta meat
music money weather news advice furniture luggage homework information traffic sand snow rain ice
wood gold silver air smoke sunshine fruit chocolate popcorn cereal yogurt garlic ginger cinnamon
laundry paint glue paper oil gas electricity patience courage luck fun noise silence
"""

PLACES_COMMON = """
park garden kitchen bedroom bathroom office school library museum hospital station airport market
shop store bakery restaurant cafe hotel bank church castle palace farm forest jungle desert beach
island lake river mountain hill valley village town city street road bridge tunnel harbor field
meadow cave zoo theater cinema stadium gym pool playground factory warehouse barn garage basement
attic hallway classroom studio laboratory cottage cabin tower lighthouse pond stream ocean coast
cliff canyon volcano swamp orchard vineyard square plaza avenue alley highway parking-lot supermarket
pharmacy bookstore post-office courthouse embassy university college kindergarten camp campsite
"""

ABSTRACT = """
idea plan problem question answer story dream secret reason mistake choice chance goal promise rule
lesson joke song poem word sentence name voice sound smell taste color shape size price number list
game party meeting concert festival holiday birthday wedding trip journey adventure accident decision
surprise habit memory feeling thought fear hope wish project report speech letter message email
recipe puzzle riddle mystery plot theory method solution result effect cause purpose opinion excuse
argument discussion conversation interview exam test grade score race match contest prize reward
challenge risk danger warning emergency rumor legend myth fact detail clue hint signal pattern schedule
"""

TIMES = """
morning afternoon evening night day week month year hour minute moment weekend season summer winter
spring autumn
"""

DAYS = "monday tuesday wednesday thursday friday saturday sunday"

MONTHS = "january february march april may june july august september october november december"

IRREGULAR_PLURALS = """
man men
woman women
child children
gentleman gentlemen
fisherman fishermen
foot feet
tooth teeth
mouse mice
goose geese
ox oxen
person people
sheep sheep
deer deer
moose moose
fish fish
salmon salmon
tuna tuna
knife knives
leaf leaves
wife wives
wolf wolves
shelf shelves
thief thieves
calf calves
half halves
potato potatoes
tomato tomatoes
hero heroes
scarf scarves
volcano volcanoes
mosquito mosquitoes
"""

# ------------------------------------------------------------------------------------------- verbs

# transitive, object = a concrete thing (or food)
VERBS_THING = """
open close clean wash paint fix carry push pull lift move touch hold drop find lose buy sell bring
take keep hide break build make check fill count use need want like love hate choose borrow return
pack unpack share collect deliver repair replace protect save search throw catch kick drag fold wrap
hang tie cover polish steal grab spill weigh measure measure order print sketch draw photograph film
burn bury cut dig drive ride send lend sort stack lock unlock fetch ship trade rent lend mend sew knit
paint decorate arrange examine inspect carve chop slice squeeze shake stir pour scrub wipe dry iron
"""

# transitive, object = a person or an animal
VERBS_PERSON = """
help call visit meet thank invite warn follow hug greet trust teach tell ask answer chase feed watch
find miss remember forget recognize admire respect thank surprise scare wake comfort rescue protect
guide join interview pay hire thank kiss tickle tease praise blame forgive interrupt ignore notice
encourage introduce carry push pull race beat bite hear see serve
"""

# transitive, object = food or drink
VERBS_FOOD = "eat drink cook bake taste smell boil fry heat cool serve order buy share finish spill grill roast"

# transitive, object = an abstract noun (idea, story, plan ...)
VERBS_IDEA = """
explain discuss solve answer forget remember understand share tell write read hear describe change
accept reject consider mention ignore repeat finish start begin plan prepare imagine improve present
announce shout whisper sing learn teach study practice record review approve cancel postpone celebrate
"""

VERBS_INTRANS = """
arrive agree appear bark bloom blink breathe cough cry dance disappear faint float frown giggle glow
hurry jump knock laugh listen live nod pause play relax rest return scream shiver shout sigh skate
ski smile sneeze snore sparkle stay stumble succeed talk travel wait walk wander whisper wiggle work yawn
yell sleep sit stand run swim fly fall grow sing cheer clap complain celebrate chat climb crawl dive
drift fail freeze grin hop howl hum jog kneel leap melt nap pray react retire roar rush sail
shine shrink sink sleep slide slip sneak spin splash stare stretch study sweat swing tremble vanish
vote wake whistle win wink wonder worry
"""

# motion verbs that take "to <place>"
VERBS_MOTION = "go walk run drive ride travel return move hurry rush fly sail swim jog wander march race hike"

# verbs that take a that-clause
VERBS_CLAUSE = """
think know believe hope say guess feel suppose hear remember forget notice realize dream imagine promise
"""

# verbs that take "to <verb>"
VERBS_INFINITIVE = "want need like love hate try hope plan forget decide promise learn refuse prefer start begin"

IRREGULAR_VERBS = """
arise arose arisen
awake awoke awoken
beat beat beaten
become became become
begin began begun
bend bent bent
bet bet bet
bite bit bitten
bleed bled bled
blow blew blown
break broke broken
bring brought brought
build built built
burst burst burst
buy bought bought
catch caught caught
choose chose chosen
come came come
cost cost cost
creep crept crept
cut cut cut
deal dealt dealt
dig dug dug
do did done
draw drew drawn
drink drank drunk
drive drove driven
eat ate eaten
fall fell fallen
feed fed fed
feel felt felt
fight fought fought
find found found
flee fled fled
fly flew flown
forbid forbade forbidden
forget forgot forgotten
forgive forgave forgiven
freeze froze frozen
get got gotten
give gave given
go went gone
grind ground ground
grow grew grown
hang hung hung
have had had
hear heard heard
hide hid hidden
hit hit hit
hold held held
hurt hurt hurt
keep kept kept
kneel knelt knelt
know knew known
lay laid laid
lead led led
leap leapt leapt
leave left left
lend lent lent
let let let
light lit lit
lose lost lost
make made made
mean meant meant
meet met met
pay paid paid
put put put
quit quit quit
read read read
ride rode ridden
ring rang rung
rise rose risen
run ran run
say said said
see saw seen
seek sought sought
sell sold sold
send sent sent
set set set
sew sewed sewn
shake shook shaken
shine shone shone
shoot shot shot
show showed shown
shrink shrank shrunk
shut shut shut
sing sang sung
sink sank sunk
sit sat sat
sleep slept slept
slide slid slid
speak spoke spoken
spend spent spent
spin spun spun
split split split
spread spread spread
stand stood stood
steal stole stolen
stick stuck stuck
sting stung stung
strike struck struck
swear swore sworn
sweep swept swept
swim swam swum
swing swung swung
take took taken
teach taught taught
tear tore torn
tell told told
think thought thought
throw threw thrown
understand understood understood
wake woke woken
wear wore worn
weep wept wept
win won won
write wrote written
"""

# two-syllable verbs stressed on the last syllable double their final consonant (begin -> beginning)
DOUBLING_VERBS = """
begin forget forbid prefer admit occur refer regret permit control commit upset equip submit omit patrol
"""

# ------------------------------------------------------------------------------ adjectives, adverbs

ADJECTIVES = """
happy sad big small large tiny huge tall short long old young new ancient modern fresh clean dirty
bright dark light heavy soft hard smooth rough warm cold hot cool wet dry quiet loud noisy calm busy
lazy brave shy proud kind cruel gentle polite rude funny serious silly clever wise foolish strange odd
normal simple easy difficult cheap expensive rich poor full empty open closed early late fast slow
sweet sour bitter salty spicy tasty delicious hungry thirsty tired sleepy awake sick healthy strong
weak beautiful pretty ugly handsome lovely cute charming elegant plain fancy famous popular lonely
friendly angry nervous worried scared afraid excited bored curious careful careless honest
patient rude grumpy cheerful jolly merry gloomy sunny cloudy rainy windy snowy foggy stormy chilly
icy frozen boiling wooden metal plastic glass paper golden silver red blue green yellow orange purple
pink brown black white gray dusty shiny sparkling sticky muddy sandy rocky grassy leafy sharp blunt
narrow wide deep shallow thick thin round square flat steep straight crooked curly fluffy furry
hairy bald wild tame fierce gentle loyal faithful clumsy graceful quick swift sudden strict fair
unfair true false real fake perfect broken useful useless important special ordinary strange unusual
common rare precious valuable cheap secret hidden magic mysterious peaceful quiet crowded empty
lucky unlucky brilliant bright dull boring exciting amazing wonderful terrible awful horrible
pleasant unpleasant comfortable uncomfortable cozy messy tidy neat crisp juicy ripe raw rotten stale
fresh frozen smoky fragrant colorful pale tiny giant enormous massive little miniature petite
slim skinny chubby fat lean muscular gentle calm relaxed anxious eager keen jealous grateful generous
selfish humble modest stubborn sensible reasonable ridiculous absurd clear cloudy obvious certain
sure possible impossible likely unlikely ready hopeful helpful harmless dangerous safe risky
gentle violent noble royal humble local foreign distant nearby remote public private
"""

ADVERBS_MANNER = """
quickly slowly carefully quietly loudly happily sadly gently softly suddenly finally eventually easily
badly well fast hard politely rudely calmly bravely proudly kindly angrily nervously eagerly patiently
silently secretly openly honestly cheerfully gracefully clumsily lazily busily warmly brightly
boldly neatly smoothly roughly firmly tightly loosely wildly madly sweetly bitterly sharply swiftly
steadily barely hardly simply clearly loudly proudly
"""

ADVERBS_TIME = """
today tomorrow yesterday tonight now then soon later already again early recently lately suddenly
afterwards
"""

ADVERBS_FREQUENCY = "always never often sometimes usually rarely seldom occasionally frequently normally"

ADVERBS_DEGREE = "very really quite rather so too pretty extremely fairly incredibly terribly awfully truly"

# ------------------------------------------------------------------------------------ proper names

NAMES = """
anna maria james john mary robert michael william david richard joseph thomas charles daniel matthew
anthony mark donald steven paul andrew joshua kevin brian george edward ronald timothy jason jeffrey
ryan jacob gary nicholas eric jonathan stephen larry justin scott brandon benjamin samuel frank
gregory raymond alexander patrick jack dennis jerry tyler aaron henry adam douglas nathan peter zachary
kyle walter harold jeremy ethan carl keith roger gerald christian terry sean arthur austin noah lawrence
jesse joe bryan billy jordan albert dylan bruce willie gabriel alan juan logan wayne ralph roy eugene
russell bobby mason philip louis patricia jennifer linda elizabeth barbara susan jessica sarah karen
nancy lisa betty margaret sandra ashley kimberly emily donna michelle dorothy carol amanda melissa
deborah stephanie rebecca sharon laura cynthia kathleen amy shirley angela helen brenda pamela nicole
emma samantha katherine christine debra rachel catherine carolyn janet ruth heather diane virginia
julie joyce victoria olivia kelly christina lauren joan evelyn judith megan cheryl andrea hannah martha
jacqueline frances gloria ann teresa kathryn sara janice jean alice madison doris abigail julia judy
grace denise amber marilyn beverly danielle theresa sophia marie diana brittany natalie isabella
charlotte rose alexis kayla lucy leo oscar felix hugo max sam ben tom tim nick mia zoe chloe ella lily
ruby ivy nora iris clara rosa elena sofia lena maya priya aisha fatima omar ali hassan yusuf kenji
yuki hiro mei lin wei chen raj arjun ravi anil sanjay kofi amara zara luca marco pablo diego carlos
luis sven lars ingrid astrid olga ivan igor boris
"""

PLACE_NAMES = """
paris london tokyo berlin madrid rome cairo lagos lima oslo dublin boston chicago denver seattle
texas ohio canada mexico brazil peru chile spain france italy germany poland greece egypt kenya
india china japan korea vietnam australia argentina colombia portugal ireland scotland wales england
norway sweden finland denmark iceland russia turkey morocco nigeria ghana ethiopia brazil cuba jamaica
vienna prague warsaw budapest athens lisbon amsterdam brussels geneva zurich munich milan venice
naples barcelona seville moscow istanbul dubai delhi mumbai bangkok singapore manila jakarta seoul
beijing shanghai sydney melbourne auckland toronto vancouver montreal miami atlanta houston dallas
phoenix portland nashville memphis detroit alaska hawaii florida california nevada oregon arizona
montana vermont maine georgia virginia kansas iowa utah idaho europe africa asia america antarctica
"""

# ----------------------------------------------------------------------------------------- numbers

NUMBERS = """
two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
seventeen eighteen nineteen twenty thirty forty fifty hundred
"""

ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth last next"
